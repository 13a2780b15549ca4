"""`exchange relay`: publishes outbox rows to the event bus, at least once.

One iteration, in one transaction:
  1. claim up to N unpublished rows in id order (`FOR UPDATE SKIP LOCKED`: concurrent relays
     take disjoint batches and never wait on each other);
  2. publish them (Kafka: produce all, wait for every delivery report; Postgres log: append in
     this same transaction, so that bus is exactly-once);
  3. mark the acknowledged rows (and their ledger rows) published; commit.
A crash after 2 and before 3 republishes the batch: duplicates carry the same event_id.
Unacknowledged rows stay unpublished and are retried after a jittered backoff.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exchange_core.event_bus import KafkaPublisher, OutgoingEvent, append_to_event_log
from exchange_core.settings import Settings

log = logging.getLogger("exchange.relay")


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.published = Counter("relay_events_published", "Events acknowledged by the bus",
                                 registry=self.registry)
        self.batch_seconds = Histogram("relay_batch_duration_seconds", "Claim-publish-commit time",
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
                                       registry=self.registry)
        self.lag_seconds = Gauge("relay_outbox_lag_seconds", "Age of the oldest unpublished row",
                                 registry=self.registry)
        self.errors = Counter("relay_errors", "Failed publish attempts", ["reason"],
                              registry=self.registry)


class BusPublisher(Protocol):
    def publish(self, conn: psycopg.Connection, events: Sequence[OutgoingEvent]) -> set[str]: ...
    def close(self) -> None: ...


class KafkaBusPublisher:
    def __init__(self, bootstrap: str) -> None:
        self._publisher = KafkaPublisher(bootstrap)

    def publish(self, conn, events):
        return self._publisher.publish(events)

    def close(self) -> None:
        self._publisher.close()


class PostgresLogPublisher:
    """Appends inside the relay's transaction: the log and the outbox commit together."""

    def publish(self, conn, events):
        append_to_event_log(conn, events)
        return {event.event_id for event in events}

    def close(self) -> None:
        pass


def publisher_for(settings: Settings) -> BusPublisher:
    if settings.bus_kind == "kafka":
        return KafkaBusPublisher(settings.kafka_bootstrap)
    return PostgresLogPublisher()


@dataclass
class RelayResult:
    claimed: int
    published: int


@dataclass
class OutboxRelay:
    database_url: str
    publisher: BusPublisher
    batch_size: int = 2000
    metrics: RelayMetrics = field(default_factory=RelayMetrics)
    max_backoff_s: float = 5.0
    idle_sleep_s: float = 0.05
    stop_event: threading.Event = field(default_factory=threading.Event)

    def relay_once(self, conn: psycopg.Connection) -> RelayResult:
        """One claim → publish → mark cycle in one transaction."""
        started = time.perf_counter()
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, event_id::text, topic, message_key, payload FROM ingest.outbox_events "
                "WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.batch_size,),
            ).fetchall()
            if not rows:
                return RelayResult(0, 0)
            events = [OutgoingEvent(event_id, topic, key, payload)
                      for _, event_id, topic, key, payload in rows]
            acknowledged = self.publisher.publish(conn, events)
            if acknowledged:
                ids = [row[0] for row in rows if row[1] in acknowledged]
                conn.execute(
                    "UPDATE ingest.outbox_events SET published_at = now() WHERE id = ANY(%s)", (ids,))
                conn.execute(
                    "UPDATE ingest.ingested_records SET status = 'published', published_at = now() "
                    "WHERE event_id = ANY(%s::uuid[]) AND status = 'accepted'",
                    (list(acknowledged),),
                )
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.published.inc(len(acknowledged))
        if len(acknowledged) < len(rows):
            self.metrics.errors.labels("undelivered").inc()
        return RelayResult(len(rows), len(acknowledged))

    def measure_lag(self, conn: psycopg.Connection) -> float:
        lag = conn.execute(
            "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) "
            "FROM ingest.outbox_events WHERE published_at IS NULL").fetchone()[0]
        self.metrics.lag_seconds.set(float(lag))
        return float(lag)

    def run(self, *, max_iterations: int | None = None) -> None:
        """Loop until stopped. Backs off with full jitter while the bus or DB fails."""
        failures = 0
        iterations = 0
        conn: psycopg.Connection | None = None
        last_lag = 0.0
        while not self.stop_event.is_set():
            if max_iterations is not None and iterations >= max_iterations:
                break
            iterations += 1
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True)
                result = self.relay_once(conn)
                if time.monotonic() - last_lag > 1.0:
                    self.measure_lag(conn)
                    last_lag = time.monotonic()
                if result.claimed and result.published < result.claimed:
                    failures += 1
                    self._backoff(failures)
                else:
                    failures = 0
                    if result.claimed < self.batch_size:
                        self.stop_event.wait(self.idle_sleep_s)
            except psycopg.OperationalError:
                self.metrics.errors.labels("database").inc()
                log.warning("relay lost the database; backing off")
                if conn is not None:
                    conn.close()
                conn = None
                failures += 1
                self._backoff(failures)
            except Exception as exc:  # noqa: BLE001 - keep relaying; the error is counted and logged
                self.metrics.errors.labels(type(exc).__name__).inc()
                log.warning("relay iteration failed", extra={"error_type": type(exc).__name__})
                failures += 1
                self._backoff(failures)
        if conn is not None:
            conn.close()
        self.publisher.close()

    def _backoff(self, failures: int) -> None:
        # Full jitter: uniform in [0, min(cap, base * 2^n)] spreads relays apart after an outage.
        delay = random.uniform(0, min(self.max_backoff_s, 0.1 * 2 ** min(failures, 10)))
        self.stop_event.wait(delay)


def run_relay(settings: Settings, *, batch_size: int, metrics_port: int | None,
              metrics_host: str = "127.0.0.1") -> None:
    """Entry point of `exchange relay`: SIGTERM/SIGINT finish the current batch, then exit."""
    relay = OutboxRelay(settings.database_url, publisher_for(settings), batch_size=batch_size)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host, registry=relay.metrics.registry)

    def _stop(signum, _frame):
        log.info("relay stopping", extra={"signal": signal.Signals(signum).name})
        relay.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("relay started", extra={"bus": settings.bus_kind, "batch_size": batch_size})
    relay.run()
    log.info("relay stopped")
