"""Backfill throughput: the v1 → v2 re-derivation of canonical tables, records/s.

N de-identified v1 records (the shape the tokenizer returns, with one diagnosis and two
observations each, like the sample records) are loaded into exchange.tokenized_records over
five receipt days; then, in the same run and on the same data:
  v1  the v1 derivation (canonical_v1.publish_partition, executemany upserts), the baseline;
  v2  the backfill's derivation (canonical.publish_day, full=True: COPY-staged merges);
  v2 again (every row already there: what a resumed or repeated backfill costs).
This is the work a backfill run does per partition; Dagster adds one process start and code
load per run of up to 200 days (a few seconds per run, not per record).

    .venv/bin/python bench/backfill_bench.py [--records 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, log, start_services  # noqa: E402

import psycopg  # noqa: E402

from exchange_assets.lib import canonical, canonical_v1  # noqa: E402


def deidentified(i: int) -> dict:
    encounter_id = f"enc-{i}"
    return {
        "schema_version": 1, "source_format": "record.v1",
        "person": {"tokens": {f"T{n}": f"{n}{i:043d}" for n in range(1, 6)}, "key_id": "k1",
                   "birth_year": 1950 + i % 60, "postal_code3": f"{i % 1000:03d}", "sex": "female"},
        "encounters": [{"encounter_id": encounter_id, "class": "ambulatory",
                        "start": "2026-11-30T09:15:00Z", "end": "2026-11-30T09:45:00Z"}],
        "conditions": [{"encounter_id": encounter_id, "system": "http://snomed.info/sct",
                        "code": "44054006", "display": "Diabetes mellitus type 2", "onset": None}],
        "observations": [
            {"encounter_id": encounter_id, "system": "http://loinc.org", "code": "4548-4",
             "value_num": 6.3, "value_text": None, "unit": "%", "effective": "2026-11-30T09:20:00Z"},
            {"encounter_id": encounter_id, "system": "http://loinc.org", "code": "72166-2",
             "value_num": None, "value_text": "Never smoker", "unit": None, "effective": "2026-11-30T09:21:00Z"},
        ],
    }


def load_tokenized(conn: psycopg.Connection, records: int, days: list) -> None:
    start = time.perf_counter()
    with conn.cursor() as cur, cur.copy(
        "COPY exchange.tokenized_records (event_id, partner_id, record_id, object_key, sha256, "
        "correlation_id, payload_version, received_at, partition_date, token_key_id, deidentified) "
        "FROM STDIN") as copy:
        for i in range(records):
            day = days[i % len(days)]
            received = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc) + timedelta(microseconds=i)
            copy.write_row((uuid.uuid4(), "bench", f"rec-{i}", f"raw/x/{i}.json", "0" * 64, "corr", 1,
                            received, day, "k1", json.dumps(deidentified(i))))
    log(f"loaded {records} tokenized records in {time.perf_counter() - start:.1f}s")


def timed(label: str, fn, days, records: int) -> dict:
    start = time.perf_counter()
    for day in days:
        fn(day)
    seconds = time.perf_counter() - start
    log(f"{label}: {seconds:.1f}s, {records / seconds:,.0f} records/s")
    return {"seconds": round(seconds, 2), "records_per_s": round(records / seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    state = start_services(("postgres",))
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=d) for d in range(20, 15, -1)]
    with fresh_database(state) as database_url, psycopg.connect(database_url, autocommit=True) as conn:
        load_tokenized(conn, args.records, days)
        results = {
            "records": args.records,
            "v1_derivation": timed("v1 derivation (baseline)",
                                   lambda d: canonical_v1.publish_partition(conn, d, full=True), days, args.records),
            "v2_backfill": timed("v2 backfill", lambda d: canonical.publish_day(conn, d, full=True), days, args.records),
            "v2_backfill_repeat": timed("v2 backfill, repeated", lambda d: canonical.publish_day(conn, d, full=True),
                                        days, args.records),
        }
        counts = {t: conn.execute(f"SELECT count(*) FROM canonical.{t}").fetchone()[0] for t in canonical.CANONICAL_TABLES}
        results["rows"] = counts
    results["ratio_v2_to_v1"] = round(results["v2_backfill"]["records_per_s"] / results["v1_derivation"]["records_per_s"], 2)
    if args.json:
        print(json.dumps(results))
    else:
        print(f"records: {args.records:,}; canonical rows: {counts}")
        for key in ("v1_derivation", "v2_backfill", "v2_backfill_repeat"):
            print(f"{key:22} {results[key]['records_per_s']:>8,} records/s  ({results[key]['seconds']}s)")
        print(f"ratio v2/v1: {results['ratio_v2_to_v1']}  (target: v2 backfill >= 2,000 records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
