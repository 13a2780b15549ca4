"""The Kafka reader plans each batch from the watermarks before it consumes: a pure function."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exchange_core.event_bus import plan_quotas


def test_short_partitions_leave_their_share_to_the_others():
    assert plan_quotas({"t:0": 1, "t:1": 10, "t:2": 0, "t:3": 10}, 9) == {"t:0": 1, "t:1": 4, "t:3": 4}


def test_the_remainder_goes_to_the_first_partitions_by_name():
    assert plan_quotas({"t:1": 5, "t:0": 5, "t:2": 5}, 4) == {"t:0": 2, "t:1": 1, "t:2": 1}


def test_nothing_available_plans_nothing():
    assert plan_quotas({"t:0": 0, "t:1": 0}, 100) == {}
    assert plan_quotas({}, 100) == {}


@given(available=st.dictionaries(st.sampled_from([f"t:{i}" for i in range(8)]), st.integers(0, 50)),
       max_events=st.integers(1, 200))
def test_plan_is_full_capped_fair_and_deterministic(available, max_events):
    quotas = plan_quotas(available, max_events)
    assert sum(quotas.values()) == min(max_events, sum(available.values()))
    assert all(0 < quotas[name] <= available[name] for name in quotas)
    # Fair: a partition that did not get all it had got at least as much as any other, minus one.
    for name, count in available.items():
        if quotas.get(name, 0) < count:
            assert all(quotas.get(name, 0) >= other - 1 for other in quotas.values())
    assert plan_quotas(dict(reversed(list(available.items()))), max_events) == quotas
