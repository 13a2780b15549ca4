"""Outbox relay and both event buses, on real Postgres and a real Kafka broker (KRaft)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from conftest import REPO_ROOT, make_settings
from exchange_core.event_bus import KafkaReader, PostgresLogReader
from exchange_core.services import kafka as kafka_service
from exchange_core.services.processes import free_stable_port
from ingest_api.app import create_app
from ingest_api.outbox_relay import KafkaBusPublisher, OutboxRelay, PostgresLogPublisher
from support.outbox import insert_outbox, read_all, unpublished
from support.records import canary_record, v1_record
from support.servers import ServerThread

pytestmark = pytest.mark.services

EVENT_SCHEMA = json.loads((REPO_ROOT / "contracts/events/record.ingested.v1.schema.json").read_text())
TOPICS = ["record.ingested.v1"]


@pytest.fixture
def clean_outbox(db):
    """This worker's database is private, but tests in this file share it: start empty."""
    db.execute("UPDATE ingest.outbox_events SET published_at = now() WHERE published_at IS NULL")
    yield db


def drain(relay: OutboxRelay, database_url: str, rounds: int = 100) -> int:
    published = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(rounds):
            result = relay.relay_once(conn)
            published += result.published
            if result.claimed == 0:
                break
    return published


def kafka_events(bootstrap: str, topics=TOPICS):
    reader = KafkaReader(bootstrap, topics)
    try:
        return read_all(reader)[0]
    finally:
        reader.close()


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def test_kafka_events_match_the_contract_and_carry_no_pii(kafka_services, settings, partner, database_url, clean_outbox):
    record, canaries = canary_record()
    with ServerThread(create_app(settings)) as api:
        headers = {"Authorization": f"Bearer {partner.api_key}", "Content-Type": "application/json"}
        accepted = []
        for body in (record, v1_record(), v1_record()):
            response = httpx.post(f"{api.base_url}/v1/ingest", json=body,
                                  headers=headers | {"Idempotency-Key": str(uuid.uuid4())})
            assert response.status_code == 202
            accepted.append(response.json()["event_id"])
    relay = OutboxRelay(database_url, KafkaBusPublisher(kafka_services.kafka_bootstrap))
    assert drain(relay, database_url) == 3

    every_topic = kafka_events(kafka_services.kafka_bootstrap,
                               ["record.ingested.v1", "record.ingested.v1.dlq"])
    ours = [e for e in every_topic if e.event_id in accepted]
    assert sorted(e.event_id for e in ours) == sorted(accepted)
    validator = Draft202012Validator(EVENT_SCHEMA, format_checker=FormatChecker())
    for event in ours:
        assert list(validator.iter_errors(event.payload)) == []
        assert event.key == f"{partner.partner_id}:{event.payload['record_id']}"
    everything = json.dumps([e.payload for e in every_topic]) + "".join(e.key for e in every_topic)
    for value in canaries:
        assert value not in everything
    # The ledger shows the record as published.
    status = clean_outbox.execute("SELECT status, published_at IS NOT NULL FROM ingest.ingested_records "
                                  "WHERE event_id = %s", (accepted[0],)).fetchone()
    assert status == ("published", True)


@pytest.fixture
def private_kafka(tmp_path, services_root):
    """A broker of this test's own: stopping it must not disturb tests running beside it."""
    port, controller = free_stable_port(), free_stable_port()  # restarted on the same ports below
    handle = kafka_service.start_kafka(tmp_path / "kafka", port, controller, services_root / "cache")
    kafka_service.ensure_topics(handle.bootstrap, {"record.ingested.v1": 3})
    state = {"handle": handle}

    def restart():
        state["handle"] = kafka_service.start_kafka(tmp_path / "kafka", port, controller, services_root / "cache")

    yield handle.bootstrap, lambda: kafka_service.stop_kafka(state["handle"].pid), restart
    kafka_service.stop_kafka(state["handle"].pid)


def test_broker_outage_loses_nothing_and_the_api_keeps_accepting(private_kafka, services, database_url, partner, clean_outbox):
    bootstrap, stop_broker, start_broker = private_kafka
    settings = make_settings(services, database_url, event_bus_url=f"kafka://{bootstrap}")
    relay = OutboxRelay(database_url, KafkaBusPublisher(bootstrap), batch_size=50, max_backoff_s=1.0)
    relay_thread = threading.Thread(target=relay.run, daemon=True)
    relay_thread.start()
    accepted: list[str] = []
    statuses: list[int] = []
    try:
        with ServerThread(create_app(settings)) as api, httpx.Client(timeout=30) as client:
            headers = {"Authorization": f"Bearer {partner.api_key}", "Content-Type": "application/json"}

            def post_some(count: int) -> None:
                for _ in range(count):
                    response = client.post(f"{api.base_url}/v1/ingest", json=v1_record(),
                                           headers=headers | {"Idempotency-Key": str(uuid.uuid4())})
                    statuses.append(response.status_code)
                    if response.status_code == 202:
                        accepted.append(response.json()["event_id"])

            post_some(20)
            stop_broker()
            post_some(40)  # broker down: the API must not notice
            assert unpublished(clean_outbox) > 0
            start_broker()
            post_some(20)
        assert set(statuses) == {202}
        assert wait_until(lambda: unpublished(clean_outbox) == 0, timeout_s=120)
    finally:
        relay.stop_event.set()
        relay_thread.join(timeout=30)
    on_topic = {e.event_id for e in kafka_events(bootstrap)}
    assert set(accepted) <= on_topic
    assert len(accepted) == 80


def _relay_process(database_url: str, bootstrap: str, batch_size: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "EVENT_BUS_URL": f"kafka://{bootstrap}",
           "EXCHANGE_ENV": "test"}
    return subprocess.Popen([sys.executable, "-m", "exchange_core.cli", "relay", "--batch-size", str(batch_size)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_relay_killed_mid_batch_loses_nothing(kafka_services, database_url, clean_outbox):
    with clean_outbox.transaction():
        expected = insert_outbox(clean_outbox, 6000)
    first = _relay_process(database_url, kafka_services.kafka_bootstrap, batch_size=300)
    try:
        assert wait_until(lambda: unpublished(clean_outbox) < 6000, timeout_s=60, interval_s=0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert unpublished(clean_outbox) > 0, "the relay finished before it could be killed"
    finally:
        first.kill()
    second = _relay_process(database_url, kafka_services.kafka_bootstrap, batch_size=300)
    try:
        assert wait_until(lambda: unpublished(clean_outbox) == 0, timeout_s=120)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0  # graceful shutdown
    events = [e for e in kafka_events(kafka_services.kafka_bootstrap) if e.event_id in set(expected)]
    assert {e.event_id for e in events} == set(expected)
    # Duplicates are allowed only as the same event (same id, same payload).
    by_id: dict[str, dict] = {}
    for event in events:
        assert by_id.setdefault(event.event_id, event.payload) == event.payload


def test_two_relays_at_once_publish_everything(kafka_services, database_url, clean_outbox):
    with clean_outbox.transaction():
        expected = set(insert_outbox(clean_outbox, 3000))
    relays = [_relay_process(database_url, kafka_services.kafka_bootstrap, batch_size=200) for _ in range(2)]
    try:
        assert wait_until(lambda: unpublished(clean_outbox) == 0, timeout_s=120)
    finally:
        for process in relays:
            process.send_signal(signal.SIGTERM)
        for process in relays:
            process.wait(timeout=30)
    on_topic = {e.event_id for e in kafka_events(kafka_services.kafka_bootstrap)}
    assert expected <= on_topic


def test_postgres_log_returns_events_whose_outbox_ids_commit_in_reverse_order(database_url, clean_outbox):
    relay = OutboxRelay(database_url, PostgresLogPublisher())
    reader = PostgresLogReader(database_url, TOPICS)
    _, cursor = read_all(reader)
    with psycopg.connect(database_url) as early, psycopg.connect(database_url) as late:
        first_ids = insert_outbox(early, 1)   # lower outbox id, still uncommitted
        second_ids = insert_outbox(late, 1)   # higher outbox id
        late.commit()
        drain(relay, database_url)
        seen_first, cursor = read_all(reader, cursor)
        early.commit()
    drain(relay, database_url)
    seen_second, cursor = read_all(reader, cursor)
    reader.close()
    assert [e.event_id for e in seen_first] == second_ids
    assert [e.event_id for e in seen_second] == first_ids


def test_postgres_log_reader_never_skips_across_concurrent_writers(database_url, clean_outbox):
    relay = OutboxRelay(database_url, PostgresLogPublisher(), batch_size=500, idle_sleep_s=0.001)
    reader = PostgresLogReader(database_url, TOPICS)
    _, cursor = read_all(reader)
    written: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        with psycopg.connect(database_url) as conn:
            for _ in range(125):  # 8 writers x 125 transactions x 10 rows = 10,000
                ids = insert_outbox(conn, 10)
                conn.commit()
                with lock:
                    written.extend(ids)

    relay_thread = threading.Thread(target=relay.run, daemon=True)
    relay_thread.start()
    writers = [threading.Thread(target=writer) for _ in range(8)]
    for thread in writers:
        thread.start()
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        events, cursor = reader.read(cursor, 700)
        seen.extend(e.event_id for e in events)
        if len(seen) >= 10_000 and not any(t.is_alive() for t in writers):
            break
        if not events:
            time.sleep(0.01)
    for thread in writers:
        thread.join()
    relay.stop_event.set()
    relay_thread.join(timeout=30)
    reader.close()
    assert len(written) == 10_000
    assert len(seen) == len(set(seen)) == 10_000
    assert set(seen) == set(written)


@pytest.mark.parametrize("bus", ["postgres", "kafka"])
def test_resuming_from_a_returned_cursor_has_no_gap_and_no_repeat(bus, request, database_url, clean_outbox):
    with clean_outbox.transaction():
        expected = insert_outbox(clean_outbox, 257)
    if bus == "kafka":
        bootstrap = request.getfixturevalue("kafka_services").kafka_bootstrap
        publisher, make_reader = KafkaBusPublisher(bootstrap), lambda: KafkaReader(bootstrap, TOPICS)
    else:
        publisher, make_reader = PostgresLogPublisher(), lambda: PostgresLogReader(database_url, TOPICS)
    # Cursor before our events: everything already on the bus.
    reader = make_reader()
    _, start = read_all(reader)
    reader.close()
    drain(OutboxRelay(database_url, publisher), database_url)

    whole_reader = make_reader()
    whole, _ = read_all(whole_reader, start)
    whole_reader.close()
    pieces: list = []
    cursor = start
    for _ in range(200):
        piece_reader = make_reader()  # a new reader each time: the cursor alone carries state
        events, cursor = piece_reader.read(cursor, 7, timeout_s=2.0)
        piece_reader.close()
        if not events:
            break
        pieces.extend(events)
    ids_whole = [e.event_id for e in whole if e.event_id in set(expected)]
    ids_pieces = [e.event_id for e in pieces if e.event_id in set(expected)]
    assert sorted(ids_whole) == sorted(expected)
    assert len(ids_pieces) == len(set(ids_pieces)) == len(expected)
    # Same positions (partition interleaving may differ between reads, per-partition order may not).
    positions = lambda events: sorted((e.topic, e.partition, e.offset) for e in events)  # noqa: E731
    assert positions(pieces) == positions(whole)
    for partition in {e.partition for e in pieces}:
        offsets = [e.offset for e in pieces if e.partition == partition]
        assert offsets == sorted(offsets)


def test_ledger_pages_leave_room_for_the_relays_hot_update(db):
    """Migration 0005: the relay's accepted → published update stays on the page (HOT); see
    bench/README.md for what it is worth."""
    options = db.execute("SELECT reloptions FROM pg_class WHERE oid = 'ingest.ingested_records'::regclass").fetchone()[0]
    assert "fillfactor=70" in options
    indexed = {row[0] for row in db.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'ingest.ingested_records'::regclass")}
    assert not indexed & {"status", "published_at"}, indexed  # an indexed column would rule HOT out
