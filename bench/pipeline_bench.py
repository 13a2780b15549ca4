"""Pipeline throughput: N v1 records posted → all canonical; time after the last POST, runs used.

Starts the dev stack (`exchange dev` machinery: tokenizer, ingest API, relay, `dg dev`) with
databases of its own on the harness Postgres, posts N records through the partner API with a
bounded number of concurrent connections, and waits until every record is canonical.

    .venv/bin/python bench/pipeline_bench.py [--records 100000] [--stack embedded|full] [--json]

Prints: POST phase (duration, req/s), seconds from the last POST until all canonical, records/s
end to end, number of Dagster runs (ingest_batch_job), dead letters. Targets (DESIGN.md): 100,000
records canonical within 3 minutes of the last POST, in ≤ 100 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, log, start_services  # noqa: E402

import httpx  # noqa: E402
import psycopg  # noqa: E402

from exchange_core.dev_stack import DevPorts, DevStack  # noqa: E402
from exchange_core.services import harness  # noqa: E402
from exchange_core.services.processes import free_port  # noqa: E402
from support.dagster_graphql import DagsterGraphQL  # noqa: E402
from support.records import v1_record  # noqa: E402


async def post_all(base_url: str, api_key: str, records: int, concurrency: int) -> tuple[int, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(records):
        queue.put_nowait(i)
    accepted = 0
    last_post = 0.0
    transport_errors = [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal accepted, last_post
            while not queue.empty():
                queue.get_nowait()
                # One record, one key: a retry after a dropped connection or a 5xx replays the
                # stored response if the first attempt committed, so nothing is counted twice.
                record = v1_record()
                headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": str(uuid.uuid4())}
                for _attempt in range(5):
                    try:
                        response = await client.post("/v1/ingest", json=record, headers=headers)
                    except httpx.TransportError:
                        transport_errors[0] += 1
                        await asyncio.sleep(0.5)
                        continue
                    if response.status_code == 202:
                        accepted += 1
                        last_post = time.monotonic()
                        break
                    await asyncio.sleep(0.5)
        await asyncio.gather(*[worker() for _ in range(concurrency)])
    if transport_errors[0]:
        log(f"{transport_errors[0]} transport errors, retried with the same Idempotency-Key")
    return accepted, last_post


def canonical_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM exchange.tokenized_records WHERE canonical_at IS NOT NULL").fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stack", choices=["embedded", "full"], default="embedded")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    full = args.stack == "full"
    state = start_services(harness.ALL_COMPONENTS if full else ("postgres",))
    name = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(state.admin_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = state.database_url.rsplit("/", 1)[0] + f"/{name}"
    scratch = REPO_ROOT / ".exchange" / name
    overrides = {"DATABASE_URL": database_url, "EXCHANGE_SENSOR_MAX_EVENTS": "5000", "EXCHANGE_SENSOR_INTERVAL_S": "5"}
    if not full:
        overrides["OBJECT_STORE_URL"] = f"file://{scratch / 'objects'}"
    stack = DevStack(root=harness.services_root(REPO_ROOT), full=full, log=log, env_overrides=overrides,
                     ports=DevPorts(ingest=free_port(), tokenizer=free_port(), dagster=free_port()),
                     dagster_home=scratch / "dagster_home", dagster_database=f"{name}_dagster")
    try:
        stack.prepare()
        from ingest_api.partners import create_partner

        with psycopg.connect(database_url) as conn:
            partner = create_partner(conn, "pipeline-bench")
        stack.start()
        stack.wait_ready()
        log(f"posting {args.records} records with {args.concurrency} connections")
        started = time.monotonic()
        accepted, last_post = asyncio.run(post_all(stack.ingest_url, partner.api_key, args.records, args.concurrency))
        post_seconds = last_post - started
        log(f"posted {accepted} in {post_seconds:.1f}s ({accepted / post_seconds:,.0f} req/s)")
        deadline = time.monotonic() + args.timeout
        done = canonical_count(database_url)
        while done < accepted and time.monotonic() < deadline:
            time.sleep(2)
            done = canonical_count(database_url)
        finished = time.monotonic()
        runs = [r for r in DagsterGraphQL(stack.dagster_url).runs(limit=2000) if r["jobName"] == "ingest_batch_job"]
        with psycopg.connect(database_url) as conn:
            dead = conn.execute("SELECT count(*) FROM exchange.dead_letter_records").fetchone()[0]
        result = {
            "records": args.records, "accepted": accepted, "canonical": done, "stack": args.stack,
            "post_seconds": round(post_seconds, 1), "post_req_per_s": round(accepted / post_seconds),
            "seconds_after_last_post": round(finished - last_post, 1),
            "end_to_end_records_per_s": round(done / (finished - started)),
            "dagster_runs": len(runs), "run_statuses": sorted({r["status"] for r in runs}),
            "dead_letters": dead,
        }
    finally:
        stack.stop()
        with psycopg.connect(state.admin_database_url, autocommit=True) as conn:
            for database in (name, f"{name}_dagster"):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
        print("targets: all canonical within 180 s of the last POST for 100,000 records, in <= 100 runs")
    return 0 if result["canonical"] == result["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())
