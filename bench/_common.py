"""Shared plumbing for the benchmarks in bench/ (not a test helper: nothing here asserts on time).

What lives here:
- services and a throw-away database: `harness.up(...)`, then CREATE DATABASE bench_<random>,
  migrate, and DROP ... WITH (FORCE) at the end;
- the server processes: `python bench/_common.py serve ingest|echo --port N` runs the app the way
  `exchange serve` does (uvicorn, 1 worker, uvloop + httptools, JSON logs), optionally under
  cProfile (per-thread CPU clock, worker threads included) when BENCH_PROFILE=<file> is set;
- two load generators, each its own process:
  * `wrk` (closed loop, max throughput) with a Lua script that sends a unique Idempotency-Key
    and record_id per request and counts the expected status;
  * `python bench/_common.py openloop ...`: an open-loop (wrk2-style) fixed-rate generator on
    asyncio + raw HTTP/1.1 keep-alive sockets. Latency is measured from the *intended* send time,
    so a stalled server cannot hide queueing (no coordinated omission);
- CPU accounting per process tree from /proc (server, load generator, Postgres, SeaweedFS, ...)
  and for the whole machine, so a table can say who used the two cores.

Run the benchmarks themselves: `bench/ingest_bench.py`, `bench/relay_bench.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- services, database


def start_services(components: tuple[str, ...]):
    """`harness.up` (idempotent; shared with tests and other developers on this checkout)."""
    from exchange_core.services import harness

    return harness.up(harness.services_root(REPO_ROOT), components, log=log)


@contextmanager
def fresh_database(state) -> Iterator[str]:
    """CREATE DATABASE bench_<random> on the harness Postgres, migrate it, drop it at the end."""
    import psycopg

    from exchange_core.db import migrate

    name = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(state.admin_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = state.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        log(f"database {name} created and migrated")
        yield url
    finally:
        with psycopg.connect(state.admin_database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"database {name} dropped")


def durability(database_url: str) -> dict[str, str]:
    """The settings that decide whether a commit is durable (printed with every result)."""
    import psycopg

    names = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "server_version")
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def service_env(state, database_url: str, *, event_bus_url: str = "postgres") -> dict[str, str]:
    """Environment for the platform's processes (same names `exchange services env` prints);
    EXCHANGE_ENV=test like tests/conftest.make_settings (no `Bearer dev`)."""
    return {
        **os.environ,
        "EXCHANGE_ENV": "test",
        "DATABASE_URL": database_url,
        "OBJECT_STORE_URL": "s3://raw-objects",
        "S3_ENDPOINT_URL": state.s3_endpoint_url,
        "AWS_ACCESS_KEY_ID": state.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": state.s3_secret_key,
        "EVENT_BUS_URL": event_bus_url,
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
    }


def create_bench_partner(database_url: str):
    import psycopg

    from ingest_api.partners import create_partner

    with psycopg.connect(database_url) as conn:
        return create_partner(conn, f"bench-{secrets.token_hex(4)}")


def delete_partner_objects(state, partner_id: str, since: datetime) -> int:
    """Remove the raw objects a run wrote (keys raw/yyyy/mm/dd/<partner>/...), best effort."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=state.s3_endpoint_url, region_name="us-east-1",
        aws_access_key_id=state.s3_access_key, aws_secret_access_key=state.s3_secret_key,
    )
    removed = 0
    day = since.date()
    while day <= datetime.now(timezone.utc).date():
        prefix = f"raw/{day:%Y/%m/%d}/{partner_id}/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="raw-objects", Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):
                client.delete_objects(Bucket="raw-objects",
                                      Delete={"Objects": keys[start:start + 1000], "Quiet": True})
                removed += len(keys[start:start + 1000])
        day += timedelta(days=1)
    return removed


# --------------------------------------------------------------------------- payloads


RECORD_ID_MARK = "@@RECORD_ID@@"


def bench_record(record_id: str) -> dict[str, Any]:
    """A valid v1 record of realistic size (~1.5 KB): tests/support/records.v1_record() plus a
    few more diagnoses and observations, like an ambulatory visit with labs."""
    from support.records import v1_record

    record = v1_record(record_id)
    encounter = record["encounter"]
    encounter["diagnoses"] += [
        {"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertensive disorder"},
        {"system": "http://snomed.info/sct", "code": "55822004", "display": "Hyperlipidemia"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9",
         "display": "Type 2 diabetes mellitus without complications"},
    ]
    labs = [("2345-7", 112, "mg/dL"), ("2093-3", 204, "mg/dL"), ("2085-9", 48, "mg/dL"),
            ("13457-7", 131, "mg/dL"), ("8480-6", 138, "mm[Hg]"), ("8462-4", 86, "mm[Hg]"),
            ("39156-5", 31.2, "kg/m2")]
    encounter["observations"] += [
        {"system": "http://loinc.org", "code": code, "value": value, "unit": unit,
         "effective": "2026-11-30T09:20:00Z"} for code, value, unit in labs
    ]
    return record


def body_template() -> tuple[bytes, bytes]:
    """(prefix, suffix): the JSON body is prefix + record_id + suffix (record_id is unique per
    request; the generators use the Idempotency-Key as record_id)."""
    import orjson

    from ingest_api.payload_validation import validator_for

    sample = bench_record(RECORD_ID_MARK)
    errors = list(validator_for("payloads/record.v1.schema.json").iter_errors(sample))
    if errors:
        raise SystemExit(f"bench record does not match record.v1: {errors[0].message}")
    raw = orjson.dumps(sample)
    prefix, suffix = raw.split(RECORD_ID_MARK.encode())
    return prefix, suffix


# --------------------------------------------------------------------------- CPU accounting


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime ticks) for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _tree(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


class CpuMeter:
    """CPU seconds used per named process tree over an interval, plus reaped children of this
    process (the load generator) and the whole machine (others' work shows up as `other`)."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = {name: pid for name, pid in groups.items() if pid}

    def _snapshot(self):
        table = _proc_table()
        per_group = {name: {pid: table[pid][1] for pid in _tree(root, table)}
                     for name, root in self.groups.items()}
        return per_group, resource.getrusage(resource.RUSAGE_CHILDREN), _machine_ticks()

    def __enter__(self) -> CpuMeter:
        self._start = self._snapshot()
        self._t0 = time.monotonic()
        self.result: dict[str, float] = {}
        return self

    def __exit__(self, *exc) -> None:
        end = self._snapshot()
        wall = time.monotonic() - self._t0
        result = {}
        for name, pids in end[0].items():
            before = self._start[0].get(name, {})
            result[name] = sum(ticks - before.get(pid, 0) for pid, ticks in pids.items()) / CLK_TCK
        ru0, ru1 = self._start[1], end[1]
        result["loadgen"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        busy = (end[2][0] - self._start[2][0]) / CLK_TCK
        result["machine"] = busy
        result["other"] = max(0.0, busy - sum(v for k, v in result.items() if k != "machine"))
        self.wall = wall
        self.result = {k: round(v, 2) for k, v in result.items()}
        self.cores = {k: round(v / wall, 2) for k, v in result.items()}


def wait_for_quiet(max_wait_s: float, *, threshold_cores: float = 0.35) -> float:
    """Other engineers' tests share these two cores. Before a measured phase, wait (bounded)
    until the machine is nearly idle; return the busy cores seen last (reported, not asserted)."""
    deadline = time.monotonic() + max_wait_s
    busy = 0.0
    while True:
        before = _machine_ticks()[0]
        time.sleep(1.0)
        busy = (_machine_ticks()[0] - before) / CLK_TCK
        if busy <= threshold_cores or time.monotonic() >= deadline:
            if busy > threshold_cores:
                log(f"machine still busy ({busy:.2f} cores used by others); measuring anyway")
            return round(busy, 2)


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    kind: str  # "ingest" or "echo"
    env: dict[str, str]
    profile_path: str | None = None
    ablate: str = ""
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: str = ""
    _log_handle: Any = field(default=None, repr=False)

    def start(self) -> Server:
        from exchange_core.services.processes import free_port

        self.port = self.port or free_port()
        env = dict(self.env)
        if self.profile_path:
            env["BENCH_PROFILE"] = self.profile_path
        if self.ablate:
            env["BENCH_ABLATE"] = self.ablate
        handle, self.log_path = tempfile.mkstemp(prefix=f"bench-{self.kind}-", suffix=".log")
        self._log_handle = os.fdopen(handle, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), "serve", self.kind, "--port", str(self.port)],
            env=env, stdout=self._log_handle, stderr=self._log_handle, cwd=str(REPO_ROOT),
        )
        self._wait_ready()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout_s: float = 60) -> None:
        path = "/readyz" if self.kind == "ingest" else "/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.kind} server exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.kind} server not ready after {timeout_s}s: see {self.log_path}")

    def start_profiling(self) -> None:
        """The main thread's profiler starts on SIGUSR1 (see _serve)."""
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if exc[0] is None and self.log_path and not self.profile_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass


def echo_app():
    """A bare FastAPI endpoint: read the body, answer a small JSON document."""
    from fastapi import FastAPI, Request

    app = FastAPI(title="bench echo")

    async def echo(request):
        body = await request.body()
        return {"status": "ok", "size": len(body)}

    # Annotations are strings in this module (PEP 563); give FastAPI the real class.
    echo.__annotations__ = {"request": Request, "return": dict}
    app.post("/echo")(echo)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


ABLATIONS = {
    "validation": "JSON Schema validation skipped",
    "s3": "S3 PUT replaced by a no-op store (still via asyncio.to_thread)",
    "db": "Postgres intake (lookup + transaction) skipped; S3 PUT kept",
    "logging": "per-request JSON log line off",
}


def _apply_ablations(names: set[str]):
    """Bench-only monkeypatches in the server process, to measure what a part costs by taking
    it out (no profiler overhead). Returns an object store to pass to create_app, or None."""
    unknown = names - set(ABLATIONS)
    if unknown:
        raise SystemExit(f"unknown ablations {sorted(unknown)}; known: {sorted(ABLATIONS)}")
    store = None
    if "validation" in names:
        import ingest_api.routes.ingest as routes

        routes.describe_errors = lambda validator, document: []
    if "logging" in names:
        import logging

        logging.getLogger("ingest_api.request").disabled = True
    if "s3" in names:
        class _NoopStore:
            def put_new(self, key, data, content_type):
                pass

            def delete(self, key):
                pass

            def get(self, key):
                raise KeyError(key)

            def list(self, prefix):
                return iter(())

            def check(self):
                pass

        store = _NoopStore()
    if "db" in names:
        import hashlib
        import uuid

        import ingest_api.intake as intake_module
        import ingest_api.routes.ingest as routes

        async def _intake_without_db(pool, store, req, *, lock_timeout_ms):
            ingest_id, event_id = uuid.uuid4(), uuid.uuid4()
            object_key = intake_module.object_key_for(req.partner_id, req.received_at, ingest_id)
            sha256 = hashlib.sha256(req.raw_body).hexdigest()
            await intake_module._put_raw_object(store, object_key, req.raw_body)
            intake_module.build_event(req, event_id, object_key, sha256)
            body = {"record_id": req.record_id, "ingest_id": str(ingest_id), "event_id": str(event_id),
                    "object_key": object_key, "sha256": sha256, "schema_version": req.schema_version,
                    "received_at": req.received_at.isoformat().replace("+00:00", "Z"),
                    "correlation_id": req.correlation_id, "status": "accepted"}
            return intake_module.IntakeResult(status=202, body=body, replayed=False)

        routes.intake = _intake_without_db
    return store


def _serve(kind: str, port: int) -> int:
    """Run one server the way `exchange serve ingest` does (see exchange_core/cli.py).

    BENCH_ABLATE=a,b  take parts out (see ABLATIONS) to measure their cost;
    BENCH_PROFILE=f   cProfile, CPU clock per thread; the main thread starts recording on
                      SIGUSR1 (so start-up is not in the profile); threads record from birth.
    """
    import uvicorn

    from exchange_core.logging import configure_logging

    if kind == "ingest":
        from exchange_core.settings import Settings
        from ingest_api.app import create_app

        settings = Settings()
        configure_logging(settings.log_level)
        ablations = set(filter(None, os.environ.get("BENCH_ABLATE", "").split(",")))
        store = _apply_ablations(ablations)
        app = create_app(settings, object_store=store)
    else:
        app = echo_app()
    profile_path = os.environ.get("BENCH_PROFILE")
    thread_profiles: list = []
    main_profile = None
    if profile_path:
        import cProfile
        import threading

        # CPU time per thread (time.thread_time), so blocking I/O waits do not count; the
        # bootstrap hook gives every new thread (asyncio.to_thread: boto3) its own profiler.
        def _thread_profile(frame, event, arg):
            profiler = cProfile.Profile(time.thread_time)
            thread_profiles.append(profiler)
            profiler.enable()

        threading.setprofile(_thread_profile)
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown; with a Python
        # handler installed that re-raise is harmless and we get to write the profile.
        signal.signal(signal.SIGTERM, lambda *_: None)
        main_profile = cProfile.Profile(time.thread_time)
        signal.signal(signal.SIGUSR1, lambda *_: main_profile.enable())
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                workers=1, timeout_graceful_shutdown=10)
    if main_profile is not None:
        import pstats

        main_profile.disable()
        stats = pstats.Stats(main_profile)
        for profiler in list(thread_profiles):
            try:
                stats.add(profiler)
            except (TypeError, ValueError):  # a thread that never recorded anything
                pass
        stats.dump_stats(profile_path)
    return 0


# --------------------------------------------------------------------------- wrk (closed loop)


WRK_LUA = r"""
-- Unique Idempotency-Key (also used as record_id) per request; counts the expected status.
local threads = {}
ok = 0
other = 0
local n = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local f = io.open(args[1], "rb"); prefix = f:read("*a"); f:close()
  f = io.open(args[2], "rb"); suffix = f:read("*a"); f:close()
  key_base = args[3] .. "-" .. tid .. "-"
  auth = args[4]
  path = args[5]
  expected = tonumber(args[6])
end

function request()
  n = n + 1
  local id = key_base .. n
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = id}
  if auth ~= "" then headers["Authorization"] = auth end
  return wrk.format("POST", path, headers, prefix .. id .. suffix)
end

function response(status, headers, body)
  if status == expected then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_other = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"ok":%d,"other":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, total_ok, total_other,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def require_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "wrk is not installed; this benchmark drives the servers with it.\n"
            "Install it (Debian/Ubuntu): apt-get install -y wrk"
        )
    return found


@dataclass
class LoadSpec:
    url: str           # http://127.0.0.1:PORT/path
    auth: str          # full Authorization header value, or ""
    expected: int      # the status that counts as success (202 ingest, 200 echo)
    prefix: bytes
    suffix: bytes


class _Scratch:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))

    def write(self, name: str, data: bytes | str) -> str:
        path = self.dir / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_wrk(spec: LoadSpec, *, duration_s: float, connections: int, threads: int = 1,
            key_base: str | None = None, timeout_s: int = 10) -> dict[str, Any]:
    """Closed-loop max throughput. Bounded by wrk's -d (plus a hard kill after +30 s)."""
    wrk = require_wrk()
    scratch = _Scratch()
    try:
        script = scratch.write("post.lua", WRK_LUA)
        prefix = scratch.write("prefix.bin", spec.prefix)
        suffix = scratch.write("suffix.bin", spec.suffix)
        path = "/" + spec.url.split("/", 3)[3]
        key_base = key_base or f"wrk-{secrets.token_hex(4)}"
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
                f"--timeout={timeout_s}s", "-s", script, spec.url, "--",
                prefix, suffix, key_base, spec.auth, path, str(spec.expected)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30)
    finally:
        scratch.close()
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            raw = json.loads(line.removeprefix("BENCHJSON "))
            seconds = raw["duration_us"] / 1e6
            return {
                "tool": "wrk", "connections": connections, "duration_s": round(seconds, 2),
                "requests": raw["requests"], "ok": raw["ok"], "other_status": raw["other"],
                "socket_errors": raw["err_connect"] + raw["err_read"] + raw["err_write"] + raw["err_timeout"],
                "ok_rps": round(raw["ok"] / seconds, 1),
                "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000, "p999_ms": raw["p999_us"] / 1000,
                "max_ms": raw["max_us"] / 1000, "mean_ms": round(raw["mean_us"] / 1000, 3),
            }
    raise SystemExit(f"wrk failed (rc={done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


# --------------------------------------------------------------------------- open loop


def run_openloop(spec: LoadSpec, *, rate: float, duration_s: float, warmup_s: float = 2.0,
                 max_connections: int = 256, key_base: str | None = None) -> dict[str, Any]:
    """Fixed-rate, open-loop load from a separate process (see `_openloop`)."""
    scratch = _Scratch()
    try:
        config = {
            "url": spec.url, "auth": spec.auth, "expected": spec.expected,
            "prefix_file": scratch.write("prefix.bin", spec.prefix),
            "suffix_file": scratch.write("suffix.bin", spec.suffix),
            "rate": rate, "duration_s": duration_s, "warmup_s": warmup_s,
            "max_connections": max_connections,
            "key_base": key_base or f"ol-{secrets.token_hex(4)}",
        }
        config_file = scratch.write("config.json", json.dumps(config))
        done = subprocess.run([PYTHON, str(Path(__file__).resolve()), "openloop", config_file],
                              capture_output=True, text=True, timeout=warmup_s + duration_s + 60)
    finally:
        scratch.close()
    if done.returncode != 0:
        raise SystemExit(f"open-loop generator failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer


async def _openloop_async(config: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import urlsplit

    url = urlsplit(config["url"])
    host, port, path = url.hostname, url.port, url.path
    prefix = Path(config["prefix_file"]).read_bytes()
    suffix = Path(config["suffix_file"]).read_bytes()
    rate, warmup, duration = float(config["rate"]), float(config["warmup_s"]), float(config["duration_s"])
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            + (f"Authorization: {config['auth']}\r\n" if config["auth"] else "")).encode()
    expected = int(config["expected"])
    key_base = config["key_base"]

    slots: asyncio.Queue = asyncio.Queue()
    for _ in range(int(config["max_connections"])):
        slots.put_nowait(None)  # None: a connection not opened yet

    async def open_conn() -> _Conn:
        reader, writer = await asyncio.open_connection(host, port)
        return _Conn(reader, writer)

    # Pre-open some connections so the first second does not measure TCP handshakes.
    prewarmed = [await open_conn() for _ in range(min(32, int(config["max_connections"])))]
    for conn in prewarmed:
        slots.get_nowait()
        slots.put_nowait(conn)

    results: list[tuple[float, float, float, int]] = []  # intended, sent, done, status
    errors = {"socket": 0, "timeout": 0}

    async def one(i: int, intended: float) -> None:
        conn = await slots.get()
        try:
            if conn is None:
                conn = await open_conn()
            key = f"{key_base}-{i}".encode()
            body = prefix + key + suffix
            sent = time.perf_counter()
            conn.writer.write(head + b"Idempotency-Key: " + key + b"\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)
            status_line = await asyncio.wait_for(conn.reader.readline(), 15)
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            keep_alive = True
            while True:
                line = await conn.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep_alive = False
            if length:
                await conn.reader.readexactly(length)
            results.append((intended, sent, time.perf_counter(), status))
            if not keep_alive:
                conn.writer.close()
                conn = None
        except asyncio.TimeoutError:
            errors["timeout"] += 1
            conn.writer.close()
            conn = None
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            errors["socket"] += 1
            if conn is not None:
                conn.writer.close()
            conn = None
        finally:
            slots.put_nowait(conn)

    total = int(rate * (warmup + duration))
    tasks = set()
    start = time.perf_counter() + 0.05
    hard_stop = start + warmup + duration + 5
    for i in range(total):
        intended = start + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() > hard_stop:
            break
        task = asyncio.ensure_future(one(i, intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    scheduled_end = time.perf_counter()
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=20)
        for task in pending:
            task.cancel()
        unfinished = len(pending)
    else:
        unfinished = 0

    measured_from = start + warmup
    window = [r for r in results if r[0] >= measured_from]
    ok = [r for r in window if r[3] == expected]
    latencies = [(r[2] - r[0]) * 1000 for r in ok]           # from the intended send time
    service = [(r[2] - r[1]) * 1000 for r in ok]             # from the actual write
    send_lag = [(r[1] - r[0]) * 1000 for r in window]         # generator lateness + conn waits
    span = (max(r[2] for r in window) - measured_from) if window else float("nan")
    statuses: dict[str, int] = {}
    for r in window:
        statuses[str(r[3])] = statuses.get(str(r[3]), 0) + 1
    return {
        "tool": "openloop", "target_rps": rate, "duration_s": duration,
        "all_ok": sum(1 for r in results if r[3] == expected),  # warm-up included
        "scheduled": int(rate * duration), "completed": len(window), "ok": len(ok),
        "statuses": statuses, "errors": errors, "unfinished": unfinished,
        "schedule_overrun_s": round(max(0.0, scheduled_end - (start + warmup + duration)), 3),
        "achieved_ok_rps": round(len(ok) / span, 1) if window else 0.0,
        "p50_ms": round(percentile(latencies, 50), 2), "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2), "p999_ms": round(percentile(latencies, 99.9), 2),
        "max_ms": round(max(latencies), 2) if latencies else float("nan"),
        "service_p50_ms": round(percentile(service, 50), 2),
        "service_p99_ms": round(percentile(service, 99), 2),
        "send_lag_p99_ms": round(percentile(send_lag, 99), 2),
    }


def _openloop(config_file: str) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    config = json.loads(Path(config_file).read_text())
    print(json.dumps(asyncio.run(_openloop_async(config))))
    return 0


# --------------------------------------------------------------------------- reporting


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench helpers (servers, open-loop generator)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("kind", choices=["ingest", "echo"])
    serve.add_argument("--port", type=int, required=True)
    openloop = sub.add_parser("openloop")
    openloop.add_argument("config_file")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.kind, args.port)
    return _openloop(args.config_file)


if __name__ == "__main__":
    sys.exit(main())
