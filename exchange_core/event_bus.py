"""The event bus behind one small interface: publish a batch; read from a cursor.

Two implementations:
- Kafka (compose, production, tests): topic per event type, key `partner_id:record_id`, an
  idempotent producer with acks=all. Readers `assign()` explicit offsets; no consumer group.
- Postgres event log (embedded default): `exchange.event_log` with gapless offsets.

Delivery is at-least-once; every consumer dedupes on `event_id`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import orjson
import psycopg

log = logging.getLogger("exchange.event_bus")

# Transaction-scoped advisory lock id: one event-log appender at a time.
EVENT_LOG_APPEND_LOCK = 0x45564C47  # "EVLG"


@dataclass(frozen=True)
class OutgoingEvent:
    event_id: str
    topic: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class BusEvent:
    """An event as read back: where it sits on the bus and what it says."""

    topic: str
    partition: int
    offset: int
    key: str
    payload: dict[str, Any]

    @property
    def event_id(self) -> str:
        return self.payload["event_id"]


class EventReader(Protocol):
    def read(self, cursor: dict[str, int], max_events: int, timeout_s: float = 1.0
             ) -> tuple[list[BusEvent], dict[str, int]]:
        """Up to `max_events` events after `cursor`, and the cursor to resume from."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- Postgres log


def append_to_event_log(conn: psycopg.Connection, events: Sequence[OutgoingEvent]) -> list[int]:
    """Append inside the caller's transaction; returns the offsets given. Gapless because the
    advisory lock is held until the caller commits, so the next appender sees our max offset."""
    if not events:
        return []
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_LOG_APPEND_LOCK,))
    last = conn.execute("SELECT coalesce(max(log_offset), 0) FROM exchange.event_log").fetchone()[0]
    offsets = list(range(last + 1, last + 1 + len(events)))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exchange.event_log (log_offset, event_id, topic, message_key, payload) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(offset, e.event_id, e.topic, e.key, orjson.dumps(e.payload).decode())
             for offset, e in zip(offsets, events)],
        )
    return offsets


class PostgresLogReader:
    """Reads `exchange.event_log` after a cursor {"offset": n}."""

    def __init__(self, database_url: str, topics: Iterable[str]) -> None:
        self.database_url = database_url
        self.topics = list(topics)
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        return self._conn

    def read(self, cursor: dict[str, int], max_events: int, timeout_s: float = 1.0
             ) -> tuple[list[BusEvent], dict[str, int]]:
        after = int(cursor.get("offset", 0))
        rows = self._connection().execute(
            "SELECT log_offset, topic, message_key, payload FROM exchange.event_log "
            "WHERE log_offset > %s ORDER BY log_offset LIMIT %s",
            (after, max_events),
        ).fetchall()
        if not rows:
            return [], {"offset": after}
        # Events on other topics still advance the cursor: the log is one ordered stream.
        events = [BusEvent(topic, 0, offset, key, payload)
                  for offset, topic, key, payload in rows if topic in self.topics]
        return events, {"offset": rows[-1][0]}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# --------------------------------------------------------------------------- Kafka


def kafka_producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # implies acks=all, bounded in-flight, retries
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        # A publish attempt gives up after this long; the relay then backs off and retries.
        "message.timeout.ms": 10000,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 1000,
    }


class KafkaPublishError(Exception):
    """Some events of a batch were not acknowledged (message names no payload value)."""


class KafkaPublisher:
    """Publishes batches and reports which events the broker acknowledged."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(kafka_producer_config(bootstrap))

    def publish(self, events: Sequence[OutgoingEvent], timeout_s: float = 15.0) -> set[str]:
        """Produce every event, wait for delivery reports; return the acknowledged event ids."""
        from confluent_kafka import KafkaException

        acknowledged: set[str] = set()
        failures: list[str] = []

        def on_delivery(err, msg, event_id):
            if err is None:
                acknowledged.add(event_id)
            else:
                failures.append(err.name() if hasattr(err, "name") else str(err))

        for event in events:
            payload = orjson.dumps(event.payload)
            while True:
                try:
                    self._producer.produce(
                        event.topic, value=payload, key=event.key.encode(),
                        headers={"event_id": event.event_id.encode()},
                        on_delivery=lambda err, msg, eid=event.event_id: on_delivery(err, msg, eid),
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # local queue full: let deliveries drain
                except KafkaException as exc:
                    raise KafkaPublishError(f"produce refused: {exc.args[0].name()}") from None
        remaining = self._producer.flush(timeout_s)
        if remaining:
            log.warning("kafka delivery timed out", extra={"undelivered": remaining})
        if failures:
            log.warning("kafka delivery failed", extra={"failed": len(failures), "reason": failures[0]})
        return acknowledged

    def close(self) -> None:
        self._producer.flush(5)


class KafkaReader:
    """Reads topics from explicit per-partition offsets with `assign()`; never a consumer group.

    Cursor: {"<topic>:<partition>": next_offset}. Offset-out-of-range policy: a stored offset
    below the low watermark (retention removed events) or above the high watermark (topic was
    recreated) restarts that partition at the earliest retained offset. It is logged at ERROR
    with the size of the gap: events that retention removed are recovered by a backfill of the
    affected days, which re-derives from the ledger and raw objects, not from Kafka.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        from confluent_kafka import Consumer

        self.topics = list(topics)
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "exchange-reader-unused",  # required by librdkafka; never committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",  # we handle out-of-range ourselves
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        })
        self._partitions: dict[str, list[int]] | None = None

    def partitions(self) -> dict[str, list[int]]:
        if self._partitions is None:
            metadata = self._consumer.list_topics(timeout=10)
            found = {}
            for topic in self.topics:
                info = metadata.topics.get(topic)
                if info is None or info.error is not None:
                    raise RuntimeError(f"kafka topic {topic} is missing")
                found[topic] = sorted(info.partitions)
            self._partitions = found
        return self._partitions

    def read(self, cursor: dict[str, int], max_events: int, timeout_s: float = 1.0
             ) -> tuple[list[BusEvent], dict[str, int]]:
        from confluent_kafka import TopicPartition

        next_cursor = dict(cursor)
        pending: dict[str, tuple[str, int, int, int]] = {}  # name -> (topic, partition, start, high)
        for topic, partitions in self.partitions().items():
            for partition in partitions:
                name = f"{topic}:{partition}"
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10, cached=False)
                start = int(cursor.get(name, low))
                if start < low or start > high:
                    log.error("kafka offset out of range; restarting at the earliest retained offset",
                              extra={"partition": name, "stored_offset": start, "low": low, "high": high,
                                     "skipped_events": max(0, low - start)})
                    start = low
                next_cursor[name] = start
                if start < high:
                    pending[name] = (topic, partition, start, high)
        # Plan the batch before consuming, from the watermarks alone: the same cursor over the same
        # log yields the same events (and so the same run keys) whatever order fetches complete in.
        quotas = plan_quotas({name: high - start for name, (_, _, start, high) in pending.items()}, max_events)
        assignments, targets = [], {}
        for name, quota in quotas.items():
            topic, partition, start, _ = pending[name]
            assignments.append(TopicPartition(topic, partition, start))
            targets[name] = start + quota
        if not assignments:
            return [], next_cursor
        self._consumer.assign(assignments)
        events: list[BusEvent] = []
        deadline = time.monotonic() + timeout_s
        try:
            while targets and len(events) < max_events and time.monotonic() < deadline:
                for msg in self._consumer.consume(min(1000, max_events - len(events)), timeout=0.2):
                    if msg.error():
                        log.warning("kafka read error", extra={"reason": msg.error().name()})
                        continue
                    name = f"{msg.topic()}:{msg.partition()}"
                    if name not in targets or not next_cursor[name] <= msg.offset() < targets[name]:
                        continue  # outside the plan: a later read takes it
                    events.append(BusEvent(msg.topic(), msg.partition(), msg.offset(),
                                           (msg.key() or b"").decode(), orjson.loads(msg.value())))
                    next_cursor[name] = msg.offset() + 1
                    if next_cursor[name] >= targets[name]:
                        targets.pop(name)
        finally:
            self._consumer.unassign()
        return events, next_cursor

    def close(self) -> None:
        self._consumer.close()


def plan_quotas(available: dict[str, int], max_events: int) -> dict[str, int]:
    """Split `max_events` over partitions fairly (water-filling in name order): each partition gets
    an equal share, capped by what it has; what a short partition leaves goes to the others.
    Only partitions with a positive quota are returned."""
    quotas = {name: 0 for name in available}
    remaining = max_events
    hungry = sorted(name for name, count in available.items() if count > 0)
    while remaining > 0 and hungry:
        # An equal share each round; once shares round down to zero, one each in name order.
        share = remaining // len(hungry)
        for name in list(hungry):
            grant = min(share or 1, available[name] - quotas[name], remaining)
            quotas[name] += grant
            remaining -= grant
            if quotas[name] == available[name]:
                hungry.remove(name)
    return {name: quota for name, quota in quotas.items() if quota > 0}


def open_reader(settings, topics: Iterable[str]) -> EventReader:
    if settings.bus_kind == "kafka":
        return KafkaReader(settings.kafka_bootstrap, topics)
    return PostgresLogReader(settings.database_url, topics)
