#!/usr/bin/env python
"""Ingest v2 (FHIR R4 bundles) throughput on the repository's sample bundles, MB/s and bundles/s.

    .venv/bin/python bench/ingest_v2_bench.py [--duration 20] [--concurrency 4] [--json]

One run, same machine, same client, the six Synthea patient bundles of tests/data/fhir
(0.2-1 MB each) posted round-robin, each with a fresh Idempotency-Key:
  (a) POST /v2/ingest on the ingest API (its own uvicorn process started like `exchange serve`;
      structural validation, raw object to the harness SeaweedFS, the durable Postgres
      transaction), 202 counted;
  (b) the same bodies to the bare FastAPI echo endpoint: what moving the bytes over HTTP costs;
  (c) in this process, no HTTP: orjson parse + the v2 structural validation alone.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

import httpx  # noqa: E402
import orjson  # noqa: E402

from ingest_api.fhir_validation import check_bundle  # noqa: E402

SAMPLES = c.REPO_ROOT / "tests" / "data" / "fhir"


def sample_bundles() -> list[bytes]:
    paths = sorted(p for p in SAMPLES.glob("*/*.json") if "Information" not in p.name)
    return [p.read_bytes() for p in paths]


async def drive(url: str, auth: str, bodies: list[bytes], expect: int, duration_s: float,
                concurrency: int) -> dict:
    latencies: list[float] = []
    sent_bytes, ok, errors = 0, 0, 0
    deadline = time.monotonic() + duration_s
    headers = {"Content-Type": "application/fhir+json"}
    if auth:
        headers["Authorization"] = auth
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker(offset: int) -> None:
            nonlocal sent_bytes, ok, errors
            index = offset
            while time.monotonic() < deadline:
                body = bodies[index % len(bodies)]
                index += concurrency
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body,
                                                 headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
                except httpx.TransportError:
                    errors += 1
                    continue
                if response.status_code == expect:
                    ok += 1
                    sent_bytes += len(body)
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1
        began = time.monotonic()
        await asyncio.gather(*[worker(i) for i in range(concurrency)])
        elapsed = time.monotonic() - began
    return {"ok": ok, "errors": errors, "seconds": round(elapsed, 2),
            "bundles_per_s": round(ok / elapsed, 1), "mb_per_s": round(sent_bytes / elapsed / 1e6, 2),
            "p50_ms": round(c.percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(c.percentile(latencies, 99), 1) if latencies else None}


def validation_only(bodies: list[bytes], duration_s: float) -> dict:
    done, parsed_bytes = 0, 0
    deadline = time.monotonic() + duration_s
    began = time.monotonic()
    while time.monotonic() < deadline:
        body = bodies[done % len(bodies)]
        assert check_bundle(orjson.loads(body)).ok
        done += 1
        parsed_bytes += len(body)
    elapsed = time.monotonic() - began
    return {"ok": done, "seconds": round(elapsed, 2), "bundles_per_s": round(done / elapsed, 1),
            "mb_per_s": round(parsed_bytes / elapsed / 1e6, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured phase")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent connections")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    bodies = sample_bundles()
    state = c.start_services(("postgres", "s3"))
    report: dict = {"benchmark": "ingest_v2", "bundles": len(bodies),
                    "bundle_bytes": sorted(len(b) for b in bodies), "concurrency": args.concurrency}
    with c.fresh_database(state) as url:
        report["postgres"] = c.durability(url)
        partner = c.create_bench_partner(url)
        env = c.service_env(state, url)
        with c.Server("echo", env) as echo, c.Server("ingest", env) as ingest:
            c.log("warming up both servers (not measured)")
            asyncio.run(drive(ingest.base_url + "/v2/ingest", f"Bearer {partner.api_key}", bodies, 202, 3, 2))
            asyncio.run(drive(echo.base_url + "/echo", "", bodies, 200, 3, 2))
            c.log(f"v2 ingest for {args.duration:.0f}s")
            report["ingest_v2"] = asyncio.run(drive(ingest.base_url + "/v2/ingest", f"Bearer {partner.api_key}",
                                                    bodies, 202, args.duration, args.concurrency))
            c.log(f"echo for {args.duration:.0f}s")
            report["echo"] = asyncio.run(drive(echo.base_url + "/echo", "", bodies, 200, args.duration,
                                               args.concurrency))
        report["validation_only"] = validation_only(bodies, min(args.duration, 10))
    report["ratio_ingest_to_echo"] = round(report["ingest_v2"]["mb_per_s"] / report["echo"]["mb_per_s"], 3)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"v2 ingest on {len(bodies)} sample bundles ({min(report['bundle_bytes']):,}-"
          f"{max(report['bundle_bytes']):,} B), {args.concurrency} connections, {args.duration:.0f}s per phase; "
          f"postgres fsync={report['postgres']['fsync']} synchronous_commit={report['postgres']['synchronous_commit']}")
    rows = [[name, r["ok"], r.get("errors", 0), r["bundles_per_s"], r["mb_per_s"], r.get("p50_ms"), r.get("p99_ms")]
            for name, r in (("POST /v2/ingest (202)", report["ingest_v2"]), ("echo (200)", report["echo"]),
                            ("parse + validate, in-process", report["validation_only"]))]
    print(c.table(rows, ["phase", "ok", "errors", "bundles/s", "MB/s", "p50 ms", "p99 ms"]))
    print(f"ratio ingest/echo (MB/s): {report['ratio_ingest_to_echo']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
