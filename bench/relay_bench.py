#!/usr/bin/env python
"""Outbox relay: drain throughput to Kafka (and the Postgres event log), and outbox lag under load.

    .venv/bin/python bench/relay_bench.py [--events 100000] [--batch-sizes 500,2000,5000] [--json]

1. Throughput: for each bus and batch size, insert N outbox rows the way
   tests/support/outbox.insert_outbox does (plus, unless --no-ledger, the matching
   ingest.ingested_records rows the relay also updates), then time `OutboxRelay.relay_once`
   loops until the outbox is empty -> events/s. Kafka: the harness broker, topic
   record.ingested.v1, idempotent producer, acks=all; the topic's high watermarks are checked.
   Postgres event log: PostgresLogPublisher (appends in the relay's transaction).
2. Lag, with `exchange relay` running as its own process against Kafka:
   a. API-driven: the ingest API (separate uvicorn process, real S3 + Postgres) at a fixed
      open-loop rate (--lag-rate N, or "auto" (default) = half of what a 5 s probe sustains,
      capped at 1000 req/s: a saturated API would measure its own queueing, not the relay);
   b. relay-only: outbox rows committed directly at --direct-rate (default 1000 rows/s, in small
      transactions every 10 ms), so the relay's own lag is measured at the design rate even
      when the API cannot produce it.
   Figures: age of the oldest unpublished row sampled every 100 ms (what the relay exports as
   relay_outbox_lag_seconds), per-event `published_at - created_at`, and per-event time until a
   Kafka consumer actually received the event (created_at -> consumer receive).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

TOPIC = "record.ingested.v1"
TARGETS = {"relay_events_per_s": 20000.0, "lag_p99_s": 1.0, "lag_rate": 1000.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="outbox rows per throughput run")
    parser.add_argument("--batch-sizes", default="500,2000,5000")
    parser.add_argument("--buses", default="kafka,postgres", help="kafka,postgres or one of them")
    parser.add_argument("--no-ledger", action="store_true",
                        help="outbox rows only (no ingested_records rows for the relay to update)")
    parser.add_argument("--ledger-fillfactor", type=int,
                        help="experiment: ALTER TABLE ingest.ingested_records SET (fillfactor=N) in "
                             "the bench database before inserting (room for HOT updates)")
    parser.add_argument("--max-drain-seconds", type=float, default=180.0,
                        help="upper bound per throughput run")
    parser.add_argument("--lag-rate", default="auto",
                        help="API-driven lag run: req/s, or 'auto' (50%% of a short max probe, capped at 1000)")
    parser.add_argument("--lag-duration", type=float, default=20.0)
    parser.add_argument("--direct-rate", type=float, default=1000.0,
                        help="relay-only lag run: outbox rows/s committed directly (0 = skip)")
    parser.add_argument("--relay-batch-size", type=int, default=2000,
                        help="--batch-size of the `exchange relay` process in the lag runs")
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="max seconds to wait for the machine to go idle before each phase")
    parser.add_argument("--keep-objects", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- throughput


class TimedPublisher:
    """Wraps a BusPublisher to split each relay_once into bus time and database time."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0

    def publish(self, conn, events):
        started = time.perf_counter()
        try:
            return self.inner.publish(conn, events)
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.inner.close()


def insert_rows(url: str, count: int, partner_id: str, with_ledger: bool) -> float:
    """Outbox rows as tests/support/outbox.insert_outbox builds them (make_event: same columns,
    same payload), written with COPY instead of executemany so 100k rows take seconds; then the
    ledger rows the API writes alongside, and VACUUM ANALYZE (what autovacuum would do)."""
    import orjson
    import psycopg
    from support.outbox import make_event

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        # Every run starts from the same state: empty outbox and ledger (no dead rows left over
        # from the previous run), then `count` fresh unpublished rows.
        conn.execute("TRUNCATE ingest.outbox_events, ingest.ingested_records")
        for start in range(0, count, 20_000):
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY ingest.outbox_events (event_id, event_type, topic, message_key, "
                              "payload) FROM STDIN") as copy:
                    for _ in range(min(20_000, count - start)):
                        e = make_event(partner_id)
                        copy.write_row((e["event_id"], "record.ingested", "record.ingested.v1",
                                        f"{e['partner_id']}:{e['record_id']}", orjson.dumps(e).decode()))
        if with_ledger:
            conn.execute(
                "INSERT INTO ingest.ingested_records (ingest_id, partner_id, record_id, schema_version, "
                "object_key, sha256, size_bytes, content_type, event_id, correlation_id, received_at) "
                "SELECT gen_random_uuid(), payload->>'partner_id', payload->>'record_id', 1, "
                "payload->>'object_key', payload->>'sha256', 100, 'application/json', o.event_id, "
                "payload->>'correlation_id', o.created_at FROM ingest.outbox_events o "
                "WHERE o.published_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM ingest.ingested_records r WHERE r.event_id = o.event_id)")
        conn.execute("VACUUM ANALYZE ingest.outbox_events")
        conn.execute("VACUUM ANALYZE ingest.ingested_records")
    return time.perf_counter() - started


class TimedConnection:
    """Passes through to a psycopg connection, timing the relay's three statements (the claim
    includes fetching and decoding the rows); commit and Python are the remainder."""

    KINDS = (("SELECT id, event_id", "claim"), ("UPDATE ingest.outbox_events", "mark_outbox"),
             ("UPDATE ingest.ingested_records", "mark_ledger"))

    def __init__(self, conn) -> None:
        self._conn = conn
        self.seconds = {kind: 0.0 for _, kind in self.KINDS}

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def execute(self, query, params=None, **kwargs):
        kind = next((k for prefix, k in self.KINDS if query.startswith(prefix)), None)
        started = time.perf_counter()
        cursor = self._conn.execute(query, params, **kwargs)
        if kind == "claim":
            rows = cursor.fetchall()
            self.seconds[kind] += time.perf_counter() - started
            return _Rows(rows)
        if kind:
            self.seconds[kind] += time.perf_counter() - started
        return cursor


class _Rows:
    def __init__(self, rows) -> None:
        self._rows = rows

    def fetchall(self):
        return self._rows


def kafka_high_watermarks(bootstrap: str, topic: str = TOPIC) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks-unused",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                   for p in partitions)
    finally:
        consumer.close()


def event_log_count(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM exchange.event_log").fetchone()[0]


def make_publisher(bus: str, state):
    from ingest_api.outbox_relay import KafkaBusPublisher, PostgresLogPublisher

    return KafkaBusPublisher(state.kafka_bootstrap) if bus == "kafka" else PostgresLogPublisher()


def drain(url: str, relay, max_rounds: int, max_seconds: float) -> dict:
    import psycopg

    batch_ms = []
    published = claimed = undelivered = 0
    with psycopg.connect(url, autocommit=True) as raw_conn:
        conn = TimedConnection(raw_conn)
        started = time.perf_counter()
        last = started
        deadline = started + max_seconds
        for _ in range(max_rounds):
            t = time.perf_counter()
            result = relay.relay_once(conn)
            if result.claimed == 0:
                break
            last = time.perf_counter()
            batch_ms.append((last - t) * 1000)
            claimed += result.claimed
            published += result.published
            undelivered += result.claimed - result.published
            if last > deadline:
                c.log("drain stopped at the time bound")
                break
        remaining = conn.execute(
            "SELECT count(*) FROM ingest.outbox_events WHERE published_at IS NULL").fetchone()[0]
    return {"elapsed_s": last - started, "published": published, "claimed": claimed,
            "sql_s": conn.seconds,
            "undelivered": undelivered, "batches": len(batch_ms), "remaining": remaining,
            "batch_p50_ms": round(c.percentile(batch_ms, 50), 1),
            "batch_p99_ms": round(c.percentile(batch_ms, 99), 1)}


def split_of(sql_s: dict, bus_s: float, elapsed: float) -> dict:
    """Share of the drain time per step: claim, publish, mark outbox, mark ledger, rest (commit,
    Python, building events)."""
    if not elapsed:
        return {}
    parts = {**sql_s, "publish": bus_s}
    parts["commit+python"] = max(0.0, elapsed - sum(parts.values()))
    return {k: round(v / elapsed, 2) for k, v in parts.items()}


def throughput_runs(args, state, url: str, partner_id: str) -> list[dict]:
    from ingest_api.outbox_relay import OutboxRelay

    rows = []
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    for bus in [b.strip() for b in args.buses.split(",") if b.strip()]:
        publisher = TimedPublisher(make_publisher(bus, state))
        try:
            # Warm-up (not timed): producer connection, metadata, prepared statements.
            insert_rows(url, 1000, partner_id, not args.no_ledger)
            drain(url, OutboxRelay(url, publisher, batch_size=1000), 10, 60)
            for batch_size in batch_sizes:
                c.log(f"{bus}: inserting {args.events:,} outbox rows")
                insert_s = insert_rows(url, args.events, partner_id, not args.no_ledger)
                before = kafka_high_watermarks(state.kafka_bootstrap) if bus == "kafka" else event_log_count(url)
                publisher.seconds = 0.0
                relay = OutboxRelay(url, publisher, batch_size=batch_size)
                max_rounds = args.events // batch_size + 50
                c.wait_for_quiet(args.quiet_wait)
                c.log(f"{bus}: relaying with batch size {batch_size}")
                with c.CpuMeter({"relay": os.getpid(), "postgres": state.pids.get("postgres"),
                                 "kafka": state.pids.get("kafka")}) as meter:
                    result = drain(url, relay, max_rounds, args.max_drain_seconds)
                after = kafka_high_watermarks(state.kafka_bootstrap) if bus == "kafka" else event_log_count(url)
                elapsed = result["elapsed_s"]
                row = {
                    "bus": bus, "batch_size": batch_size, "events": args.events,
                    "insert_s": round(insert_s, 1), **result,
                    "elapsed_s": round(elapsed, 2),
                    "events_per_s": round(result["published"] / elapsed, 0) if elapsed else None,
                    "bus_share": round(publisher.seconds / elapsed, 2) if elapsed else None,
                    "split": split_of(result["sql_s"], publisher.seconds, elapsed),
                    "appended_on_bus": after - before,
                    "cpu_cores": meter.cores,
                }
                c.log(f"{bus} batch {batch_size}: {row['events_per_s']} events/s "
                      f"({row['published']} in {row['elapsed_s']} s)")
                rows.append(row)
        finally:
            publisher.close()
    return rows


# --------------------------------------------------------------------------- lag


class KafkaWatcher(threading.Thread):
    """Consumes the topic from its current end and notes when each event_id arrived."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-lag-unused",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                                  "auto.offset.reset": "latest"})
        partitions = self.consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        self.consumer.assign([TopicPartition(TOPIC, p, OFFSET_END) for p in partitions])
        self.received: dict[str, float] = {}
        self.stop_event = threading.Event()
        # Wait for the assignment to resolve OFFSET_END before the load starts.
        self.consumer.consume(100, timeout=1.0)

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for msg in self.consumer.consume(1000, timeout=0.05):
                if msg.error():
                    continue
                now = time.time()
                for name, value in msg.headers() or []:
                    if name == "event_id":
                        self.received.setdefault(value.decode(), now)

    def close(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
        self.consumer.close()


class LagSampler(threading.Thread):
    """Every 100 ms: age of the oldest unpublished outbox row and the backlog size."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        import psycopg

        deadline = time.monotonic() + 600
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                age, backlog = conn.execute(
                    "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8, count(*) "
                    "FROM ingest.outbox_events WHERE published_at IS NULL").fetchone()
                self.samples.append((time.time(), float(age), int(backlog)))
                self.stop_event.wait(0.1)

    def close(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def start_relay_process(state, url: str, batch_size: int) -> tuple[subprocess.Popen, str]:
    env = c.service_env(state, url, event_bus_url=f"kafka://{state.kafka_bootstrap}")
    handle, log_path = tempfile.mkstemp(prefix="bench-relay-", suffix=".log")
    proc = subprocess.Popen([c.PYTHON, "-m", "exchange_core.cli", "relay", "--batch-size", str(batch_size)],
                            env=env, stdout=handle, stderr=handle, cwd=str(c.REPO_ROOT))
    os.close(handle)
    return proc, log_path


def stop_process(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def wait_drained(url: str, watcher: KafkaWatcher, window_start: float, timeout_s: float = 90) -> float:
    """Until no outbox row is unpublished and the consumer saw every event of the window."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() - started < timeout_s:
            pending = conn.execute(
                "SELECT count(*) FROM ingest.outbox_events WHERE published_at IS NULL").fetchone()[0]
            ids = [r[0] for r in conn.execute(
                "SELECT event_id::text FROM ingest.outbox_events WHERE created_at >= to_timestamp(%s)",
                (window_start,))]
            if pending == 0 and all(i in watcher.received for i in ids):
                return time.monotonic() - started
            time.sleep(0.2)
    c.log("lag run: not fully drained within the time bound")
    return time.monotonic() - started


def lag_figures(url: str, sampler: LagSampler, watcher: KafkaWatcher, window: tuple[float, float]) -> dict:
    import psycopg

    start, end = window
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT event_id::text, extract(epoch FROM created_at)::float8, "
            "extract(epoch FROM published_at - created_at)::float8 "
            "FROM ingest.outbox_events WHERE created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)",
            (start, end)).fetchall()
    published = [r[2] for r in rows if r[2] is not None]
    on_kafka = [watcher.received[r[0]] - r[1] for r in rows if r[0] in watcher.received]
    sampled = [s[1] for s in sampler.samples if start <= s[0] <= end]
    backlog = [s[2] for s in sampler.samples if start <= s[0] <= end]

    def pct(values, q):
        return round(c.percentile(values, q), 3) if values else None

    return {
        "events": len(rows),
        "events_per_s": round(len(rows) / (end - start), 1),
        "sampled_oldest_age_p50_s": pct(sampled, 50), "sampled_oldest_age_p99_s": pct(sampled, 99),
        "sampled_oldest_age_max_s": round(max(sampled), 3) if sampled else None,
        "backlog_max": max(backlog) if backlog else None,
        "published_at_lag_p50_s": pct(published, 50), "published_at_lag_p99_s": pct(published, 99),
        "published_at_lag_max_s": round(max(published), 3) if published else None,
        "kafka_received": len(on_kafka),
        "kafka_lag_p50_s": pct(on_kafka, 50), "kafka_lag_p99_s": pct(on_kafka, 99),
        "kafka_lag_max_s": round(max(on_kafka), 3) if on_kafka else None,
    }


def direct_writer(url: str, rate: float, duration_s: float, partner_id: str) -> int:
    """Commit outbox rows at `rate` rows/s (open loop: every ~10 ms, one transaction with the
    rows that are due), like many API requests committing side by side."""
    import psycopg
    from support.outbox import insert_outbox

    written = 0
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration_s:
            due = int(rate * elapsed) - written
            if due > 0:
                with conn.transaction():
                    insert_outbox(conn, due, partner_id)
                written += due
            time.sleep(0.01)
    return written


def lag_runs(args, state, url: str, partner) -> dict:
    prefix, suffix = c.body_template()
    auth = f"Bearer {partner.api_key}"
    results: dict = {}
    env = c.service_env(state, url)
    relay, relay_log = start_relay_process(state, url, args.relay_batch_size)
    try:
        with c.Server("ingest", env) as api:
            spec = c.LoadSpec(api.base_url + "/v1/ingest", auth, 202, prefix, suffix)
            c.run_wrk(spec, duration_s=2, connections=16)  # warm-up, also starts the relay working
            if args.lag_rate == "auto":
                probe = c.run_wrk(spec, duration_s=5, connections=32)
                rate = max(10.0, min(TARGETS["lag_rate"], round(0.5 * probe["ok_rps"])))
                results["api_probe_rps"] = probe["ok_rps"]
                c.log(f"API sustains ~{probe['ok_rps']} req/s with the relay running: lag run at {rate:g} req/s")
            else:
                rate = float(args.lag_rate)
            groups = {"api": api.proc.pid, "relay": relay.pid, "postgres": state.pids.get("postgres"),
                      "s3": state.pids.get("s3"), "kafka": state.pids.get("kafka")}
            results["api"] = one_lag_run(
                args, url, state, groups, f"API-driven @ {rate:g} req/s",
                lambda: c.run_openloop(spec, rate=rate, duration_s=args.lag_duration, warmup_s=0.5))
        if args.direct_rate > 0:
            groups = {"relay": relay.pid, "postgres": state.pids.get("postgres"),
                      "kafka": state.pids.get("kafka")}
            results["direct"] = one_lag_run(
                args, url, state, groups, f"relay-only @ {args.direct_rate:g} rows/s",
                lambda: {"written": direct_writer(url, args.direct_rate, args.lag_duration, partner.partner_id)})
    finally:
        code = stop_process(relay)
        results["relay_exit_code"] = code
        try:
            os.unlink(relay_log)
        except OSError:
            pass
    return results


def one_lag_run(args, url, state, groups, name, load) -> dict:
    watcher = KafkaWatcher(state.kafka_bootstrap)
    sampler = LagSampler(url)
    c.wait_for_quiet(args.quiet_wait)
    watcher.start()
    sampler.start()
    c.log(f"lag run {name} for {args.lag_duration:g}s")
    try:
        with c.CpuMeter(groups) as meter:
            window_start = time.time()
            load_result = load()
            window_end = time.time()
        drain_s = wait_drained(url, watcher, window_start)
    finally:
        sampler.close()
        watcher.close()
    figures = lag_figures(url, sampler, watcher, (window_start, window_end))
    figures.update({"name": name, "drain_after_load_s": round(drain_s, 2), "cpu_cores": meter.cores,
                    "load": {k: v for k, v in load_result.items()
                             if k in ("target_rps", "achieved_ok_rps", "ok", "p50_ms", "p99_ms",
                                      "errors", "unfinished", "written")}})
    c.log(f"{name}: {figures['events']} events, sampled lag p99 {figures['sampled_oldest_age_p99_s']} s, "
          f"kafka lag p99 {figures['kafka_lag_p99_s']} s")
    return figures


# --------------------------------------------------------------------------- report


def run(args) -> dict:
    started_at = datetime.now(timezone.utc)
    state = c.start_services(("postgres", "s3", "kafka"))
    report: dict = {"benchmark": "outbox_relay", "started_at": started_at.isoformat(),
                    "machine_cores": os.cpu_count(), "events": args.events,
                    "ledger_rows": not args.no_ledger, "targets": TARGETS}
    with c.fresh_database(state) as url:
        report["postgres"] = c.durability(url)
        partner = c.create_bench_partner(url)
        if args.ledger_fillfactor:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"ALTER TABLE ingest.ingested_records SET (fillfactor = {int(args.ledger_fillfactor)})")
            report["ledger_fillfactor"] = args.ledger_fillfactor
        try:
            if not args.skip_throughput:
                report["throughput"] = throughput_runs(args, state, url, partner.partner_id)
            if not args.skip_lag:
                report["lag"] = lag_runs(args, state, url, partner)
        finally:
            if not args.keep_objects and not args.skip_lag:
                try:
                    removed = c.delete_partner_objects(state, partner.partner_id, started_at)
                    c.log(f"removed {removed} raw objects written by this run")
                except Exception as exc:  # noqa: BLE001 - best effort
                    c.log(f"could not remove raw objects: {type(exc).__name__}")
    return report


def print_report(report: dict) -> None:
    print()
    print(f"Outbox relay, {report['machine_cores']} cores; postgres fsync={report['postgres']['fsync']} "
          f"synchronous_commit={report['postgres']['synchronous_commit']}; "
          f"ledger rows updated too: {report['ledger_rows']}"
          + (f" (experiment: ingested_records fillfactor={report['ledger_fillfactor']})"
             if report.get("ledger_fillfactor") else ""))
    if report.get("throughput"):
        rows = [[r["bus"], r["batch_size"], r["published"], r["elapsed_s"], r["events_per_s"],
                 r["bus_share"], r["batch_p50_ms"], r["batch_p99_ms"], r["appended_on_bus"],
                 r["remaining"], r["cpu_cores"].get("relay"), r["cpu_cores"].get("postgres"),
                 r["cpu_cores"].get("kafka"), r["cpu_cores"].get("other")]
                for r in report["throughput"]]
        print(c.table(rows, ["bus", "batch", "published", "seconds", "events/s", "bus share",
                             "batch p50 ms", "batch p99 ms", "appended", "left", "relay", "postgres",
                             "kafka", "other"]))
        print("(bus share: fraction of the drain spent inside publish(); relay/postgres/kafka/other: "
              "CPU cores used; appended: messages added to the topic / event_log rows)")
        print()
        print(c.table([[r["bus"], r["batch_size"], *[r["split"].get(k) for k in
                        ("claim", "publish", "mark_outbox", "mark_ledger", "commit+python")]]
                       for r in report["throughput"]],
                      ["where the drain time goes", "batch", "claim", "publish", "mark outbox",
                       "mark ledger", "commit+python"]))
        best = max((r for r in report["throughput"] if r["bus"] == "kafka"),
                   key=lambda r: r["events_per_s"] or 0, default=None)
        if best:
            print(f"best outbox -> Kafka: {best['events_per_s']:,.0f} events/s (batch {best['batch_size']}); "
                  f"design target >= {report['targets']['relay_events_per_s']:,.0f}: "
                  f"{'met' if best['events_per_s'] >= report['targets']['relay_events_per_s'] else 'NOT met'}")
    lag = report.get("lag")
    if lag:
        print()
        if "api_probe_rps" in lag:
            print(f"API max with the relay running (5 s probe): {lag['api_probe_rps']} req/s")
        rows = []
        for key in ("api", "direct"):
            r = lag.get(key)
            if not r:
                continue
            rows.append([r["name"], r["events"], r["events_per_s"], r["sampled_oldest_age_p50_s"],
                         r["sampled_oldest_age_p99_s"], r["sampled_oldest_age_max_s"],
                         r["published_at_lag_p50_s"], r["published_at_lag_p99_s"],
                         r["kafka_lag_p50_s"], r["kafka_lag_p99_s"], r["kafka_lag_max_s"],
                         r["backlog_max"], r["cpu_cores"].get("relay"), r["cpu_cores"].get("other")])
        print(c.table(rows, ["lag run", "events", "events/s", "oldest p50 s", "oldest p99 s",
                             "oldest max s", "pub_at p50 s", "pub_at p99 s", "kafka p50 s",
                             "kafka p99 s", "kafka max s", "backlog max", "relay", "other"]))
        print("(oldest: age of the oldest unpublished row, sampled every 100 ms; pub_at: published_at - "
              "created_at per event; kafka: created_at -> a consumer received the event)")
        for key in ("api", "direct"):
            r = lag.get(key)
            if r:
                print(f"  {r['name']}: load {r['load']}")
        print(f"design target: outbox lag p99 < {report['targets']['lag_p99_s']:g} s "
              f"at {report['targets']['lag_rate']:g} req/s")


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
