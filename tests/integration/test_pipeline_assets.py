"""Dagster assets and sensors on real Postgres, real SeaweedFS, real Kafka and a running tokenizer.

Each test posts its records on a day of its own (the API's receipt clock is injected), so the
per-day asset checks see only that test's records.
"""

from __future__ import annotations

import threading
import time
import uuid

import dagster as dg
import httpx
import psycopg
import pytest

from conftest import make_settings
from exchange_assets.defs.assets import CANONICAL_KEYS, TOKENIZED_RECORDS, SelectionMode
from exchange_assets.defs.jobs import selection_run_config
from exchange_assets.lib.records import refs_for_batch
from exchange_core.event_bus import KafkaReader, PostgresLogReader
from exchange_core.object_store import open_object_store
from exchange_core.services.processes import free_port
from ingest_api.outbox_relay import KafkaBusPublisher, OutboxRelay
from sensors.event_sensor import build_record_events_sensor
from support.outbox import read_all
from support.pipeline import (
    RECORD_ASSETS, SERVICE_TOKEN, canonical_snapshot, days_ago, ingest_api_on, pipeline_resources,
    post_records, relay_to_event_log, write_key_file,
)
from support.records import canary_record, v1_record
from support.servers import ServerThread
from tokenizer.app import create_app as create_tokenizer_app

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def pipeline_settings(services, database_url, tmp_path_factory):
    key_file = write_key_file(tmp_path_factory.mktemp("keys") / "keys.json")
    return make_settings(services, database_url, tokenizer_hmac_secret_file=str(key_file),
                         tokenizer_service_token=SERVICE_TOKEN)


@pytest.fixture(scope="module")
def tokenizer_service(pipeline_settings):
    with ServerThread(create_tokenizer_app(pipeline_settings)) as server:
        yield server


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as dagster_instance:
        yield dagster_instance


@pytest.fixture
def resources(database_url, tokenizer_service):
    return pipeline_resources(database_url, tokenizer_service.base_url)


def materialize_day(day, resources, instance, *, mode=SelectionMode.FULL, batch_id=None, selection=None):
    ops = ("raw__ingested_records", "tokenized__records", "canonical_tables")
    if selection is not None:
        ops = ("tokenized__records", "canonical_tables")
    return dg.materialize(
        RECORD_ASSETS, partition_key=day.isoformat(), resources=resources, instance=instance,
        run_config=selection_run_config(mode, batch_id, ops=ops), selection=selection,
    )


def check_outcomes(result) -> dict[tuple[str, str], bool]:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()}


def progress(api_base: str, api_key: str, record_id: str) -> dict:
    return httpx.get(f"{api_base}/v1/records/{record_id}",
                     headers={"Authorization": f"Bearer {api_key}"}).json()


def test_full_day_runs_make_every_record_canonical_once(pipeline_settings, partner, resources, instance, db):
    day_a, day_b = days_ago(30), days_ago(31)
    with ingest_api_on(pipeline_settings, day_a) as api:
        accepted_a = post_records(api.base_url, partner.api_key, [v1_record() for _ in range(30)])
    with ingest_api_on(pipeline_settings, day_b) as api:
        accepted_b = post_records(api.base_url, partner.api_key, [v1_record() for _ in range(20)])

    for day in (day_a, day_b):
        result = materialize_day(day, resources, instance)
        assert result.success
        assert all(check_outcomes(result).values()), check_outcomes(result)

    snapshot = canonical_snapshot(db, partner.partner_id)
    assert len(snapshot["persons"]) == 50 and len(snapshot["encounters"]) == 50
    # Each v1 record has one diagnosis and one observation: upcast into the v2 tables.
    assert len(snapshot["conditions"]) == 50 and len(snapshot["observations"]) == 50
    assert {row[11] for row in snapshot["persons"]} == {a["event_id"] for a in accepted_a + accepted_b}
    assert {row[10] for row in snapshot["persons"]} == {2}
    assert all(len(row[1]) == 44 for row in snapshot["persons"])  # a real token, not blank
    per_day = dict(db.execute(
        "SELECT partition_date, count(*) FROM canonical.persons WHERE partner_id = %s GROUP BY 1",
        (partner.partner_id,)).fetchall())
    assert per_day == {day_a: 30, day_b: 20}

    # Running the same partition again (and replaying its records) changes nothing.
    assert materialize_day(day_a, resources, instance).success
    assert canonical_snapshot(db, partner.partner_id) == snapshot

    # Status flows back to the partner.
    with ingest_api_on(pipeline_settings, day_a) as api:
        status = progress(api.base_url, partner.api_key, accepted_a[0]["record_id"])
    assert status["status"] == "canonical"
    assert [step["status"] for step in status["history"]][:1] == ["accepted"]
    assert {"tokenized", "canonical"} <= {step["status"] for step in status["history"]}


def test_poison_record_is_dead_lettered_siblings_go_canonical_and_redrive_fixes_it(
        pipeline_settings, partner, resources, instance, db):
    day = days_ago(40)
    with ingest_api_on(pipeline_settings, day) as api:
        accepted = post_records(api.base_url, partner.api_key, [v1_record() for _ in range(6)])
    store = open_object_store(pipeline_settings)
    poison = accepted[0]
    original = store.get(poison["object_key"])
    store.delete(poison["object_key"])
    store.put_new(poison["object_key"], b'{"tampered": true}', "application/json")

    relay_to_event_log(pipeline_settings.database_url)
    result = materialize_day(day, resources, instance)
    assert result.success
    assert check_outcomes(result)[("tokenized/records", "accepted_equals_tokenized_plus_dead_lettered")]
    letter = db.execute("SELECT reason_code, resolved_at FROM exchange.dead_letter_records WHERE event_id = %s",
                        (poison["event_id"],)).fetchone()
    assert letter == ("hash_mismatch", None)
    assert len(canonical_snapshot(db, partner.partner_id)["persons"]) == 5
    dlq = db.execute("SELECT payload FROM exchange.event_log WHERE topic = 'record.ingested.v1.dlq' "
                     "AND event_id = %s", (poison["event_id"],)).fetchall()
    assert dlq and dlq[0][0]["reason_code"] == "hash_mismatch"
    with ingest_api_on(pipeline_settings, day) as api:
        status = progress(api.base_url, partner.api_key, poison["record_id"])
    assert status["status"] == "dead_lettered"
    assert status["history"][-1]["reason"] == "hash_mismatch"

    # The operator restores the object, then redrives.
    store.delete(poison["object_key"])
    store.put_new(poison["object_key"], original, "application/json")
    redrive = materialize_day(day, resources, instance, mode=SelectionMode.REDRIVE,
                              selection=[TOKENIZED_RECORDS, *CANONICAL_KEYS.values()])
    assert redrive.success
    assert db.execute("SELECT resolved_at IS NOT NULL FROM exchange.dead_letter_records WHERE event_id = %s",
                      (poison["event_id"],)).fetchone() == (True,)
    assert len(canonical_snapshot(db, partner.partner_id)["persons"]) == 6


def test_tokenizer_down_for_a_while_is_retried_and_nothing_is_dead_lettered(
        pipeline_settings, partner, database_url, instance, db):
    day = days_ago(50)
    with ingest_api_on(pipeline_settings, day) as api:
        accepted = post_records(api.base_url, partner.api_key, [v1_record() for _ in range(5)])
    port = free_port()
    late_tokenizer = ServerThread(create_tokenizer_app(pipeline_settings), port=port)

    def start_late() -> None:
        time.sleep(4)
        late_tokenizer.__enter__()

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        result = materialize_day(day, pipeline_resources(database_url, f"http://127.0.0.1:{port}"), instance)
    finally:
        starter.join()
        late_tokenizer.__exit__(None, None, None)
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries, "the tokenizer outage should have been retried"
    assert db.execute("SELECT count(*) FROM exchange.dead_letter_records WHERE partition_date = %s",
                      (day,)).fetchone()[0] == 0
    persons = canonical_snapshot(db, partner.partner_id)["persons"]
    assert {row[11] for row in persons} == {a["event_id"] for a in accepted}


def evaluate_sensor(sensor, cursor, resources, instance):
    context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
    return sensor(context)


@pytest.mark.parametrize("bus", ["postgres", "kafka"])
def test_event_sensor_batches_every_event_once_one_run_per_partition_per_tick(
        bus, request, pipeline_settings, partner, database_url, tokenizer_service, instance, db):
    if bus == "kafka":
        bootstrap = request.getfixturevalue("kafka_services").kafka_bootstrap
        event_bus_url, reader = f"kafka://{bootstrap}", KafkaReader(bootstrap, ["record.ingested.v1"])
    else:
        event_bus_url, reader = "postgres", PostgresLogReader(database_url, ["record.ingested.v1"])
    relay_to_event_log(database_url)  # flush anything older onto the log first
    _, start_cursor = read_all(reader)
    reader.close()

    offset = 60 if bus == "postgres" else 70
    day_x, day_y = days_ago(offset), days_ago(offset + 1)
    with ingest_api_on(pipeline_settings, day_x) as api:
        ours = post_records(api.base_url, partner.api_key, [v1_record() for _ in range(7)])
    with ingest_api_on(pipeline_settings, day_y) as api:
        ours += post_records(api.base_url, partner.api_key, [v1_record() for _ in range(5)])
    our_ids = {a["event_id"] for a in ours}
    if bus == "kafka":
        relay = OutboxRelay(database_url, KafkaBusPublisher(bootstrap))
        with psycopg.connect(database_url, autocommit=True) as conn:
            while relay.relay_once(conn).claimed:
                pass
    else:
        relay_to_event_log(database_url)

    resources = pipeline_resources(database_url, tokenizer_service.base_url, event_bus_url)
    sensor = build_record_events_sensor(max_events=4)
    cursor, batched, first_tick = start_cursor, [], None
    import json
    cursor = json.dumps(cursor)
    for _ in range(30):
        result = evaluate_sensor(sensor, cursor, resources, instance)
        cursor = result.cursor
        if not result.run_requests:
            break
        partitions = [rr.partition_key for rr in result.run_requests]
        assert len(partitions) == len(set(partitions)), "at most one run per partition per tick"
        if first_tick is None:
            first_tick = result.run_requests
            # A tick whose cursor was never stored is evaluated again from the old cursor: it must
            # ask for the same run keys, so Dagster dedups the runs. Evaluated straight away, as a
            # restarted daemon would: the shared topic may grow later (other test workers publish).
            again = evaluate_sensor(sensor, json.dumps(start_cursor), resources, instance)
        batched.extend(result.run_requests)
    our_batched = [ref.event_id for rr in batched for ref in refs_for_batch(db, rr.run_key)
                   if ref.event_id in our_ids]
    assert sorted(our_batched) == sorted(our_ids), "no event lost or doubled across ticks"

    assert first_tick, "the first tick asked for no run"
    assert [rr.run_key for rr in again.run_requests] == [rr.run_key for rr in first_tick]

    # Running the batches makes our records canonical; replaying a batch changes nothing.
    for rr in batched:
        if any(ref.event_id in our_ids for ref in refs_for_batch(db, rr.run_key)):
            run = dg.materialize(RECORD_ASSETS, partition_key=rr.partition_key, resources=resources,
                                 instance=instance, run_config=rr.run_config, tags=rr.tags)
            assert run.success
    snapshot = canonical_snapshot(db, partner.partner_id)
    assert {row[11] for row in snapshot["persons"]} == our_ids
    replay = next(rr for rr in batched if any(r.event_id in our_ids for r in refs_for_batch(db, rr.run_key)))
    assert dg.materialize(RECORD_ASSETS, partition_key=replay.partition_key, resources=resources,
                          instance=instance, run_config=replay.run_config).success
    assert canonical_snapshot(db, partner.partner_id) == snapshot


def test_pii_canary_never_reaches_dagster_storage_or_logs(
        pipeline_settings, partner, resources, instance, db, captured_logs):
    day = days_ago(80)
    record, canaries = canary_record()
    with ingest_api_on(pipeline_settings, day) as api:
        post_records(api.base_url, partner.api_key, [record, v1_record()])
    result = materialize_day(day, resources, instance)
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    stored = [repr(entry) for entry in instance.all_logs(result.run_id)]
    stored += [repr(run.run_config), repr(run.tags)]
    for evaluation in result.get_asset_check_evaluations():
        stored.append(repr(evaluation))
    for materialization in result.asset_materializations_for_node("tokenized__records"):
        stored.append(repr(materialization.metadata))
    haystack = "\n".join(stored) + captured_logs.getvalue()
    haystack += repr(db.execute("SELECT * FROM canonical.persons WHERE partner_id = %s", (partner.partner_id,)).fetchall())
    haystack += repr(db.execute("SELECT deidentified FROM exchange.tokenized_records WHERE partner_id = %s",
                                (partner.partner_id,)).fetchall())
    assert "tokenized__records" in haystack  # the haystack really holds the run's events
    for value in canaries:
        assert value not in haystack
