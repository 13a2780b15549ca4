"""The record-event sensor: bus → at most one batch run per partition per tick.

Each tick reads up to `max_events` from the stored cursor, groups them by UTC receipt day,
saves each group as a batch (exchange.pipeline_batches, keyed by the run key) and returns the
run requests together with the new cursor. Dagster stores the cursor only with the result, so
a tick that dies before returning re-reads the same events; the deterministic run key and the
idempotent batch insert make that harmless.
"""


import hashlib
import json
from collections import defaultdict
from datetime import date

import dagster as dg

from exchange_assets.defs.assets import SelectionMode
from exchange_assets.defs.jobs import ingest_batch_job, selection_run_config
from exchange_assets.defs.resources import EventBusResource, PostgresResource
from exchange_assets.lib.records import RecordRef, ref_from_event, save_batch

RECORD_TOPICS = ["record.ingested.v1", "record.ingested.v2"]


def describe_range(before: dict[str, int], after: dict[str, int]) -> str:
    """`partition:start-end` for each bus partition the tick advanced, sorted."""
    parts = []
    for name in sorted(after):
        start = before.get(name, 0)
        if after[name] != start:
            parts.append(f"{name}:{start}-{after[name]}")
    return ",".join(parts)


def batch_run_key(bus_range: str, day: date) -> str:
    digest = hashlib.sha256(f"{bus_range}|{day.isoformat()}".encode()).hexdigest()[:20]
    return f"batch-{day.isoformat()}-{digest}"


def plan_batches(events, before: dict[str, int], after: dict[str, int]):
    """Group events by receipt day, dropping repeats of an event id within the tick."""
    by_day: dict[date, dict[str, RecordRef]] = defaultdict(dict)
    for event in events:
        ref = ref_from_event(event.payload)
        by_day[ref.partition_date].setdefault(ref.event_id, ref)
    bus_range = describe_range(before, after)
    return [(day, batch_run_key(bus_range, day), bus_range, list(refs.values()))
            for day, refs in sorted(by_day.items())]


def build_record_events_sensor(*, max_events: int = 5000, interval_s: int = 5) -> dg.SensorDefinition:
    @dg.sensor(
        name="record_events_sensor",
        job=ingest_batch_job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(f"Reads record.ingested events from the bus (up to {max_events} a tick) and "
                     "launches one batch run per receipt day."),
    )
    def record_events_sensor(context: dg.SensorEvaluationContext, event_bus: EventBusResource,
                             db: PostgresResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        reader = event_bus.reader(RECORD_TOPICS)
        try:
            events, next_cursor = reader.read(cursor, max_events, timeout_s=2.0)
        finally:
            reader.close()
        if not events:
            return dg.SensorResult(skip_reason="no new record events", cursor=json.dumps(next_cursor))
        batches = plan_batches(events, cursor, next_cursor)
        run_requests = []
        with db.connect() as conn:
            for day, run_key, bus_range, refs in batches:
                save_batch(conn, run_key, day, bus_range, refs)
                run_requests.append(dg.RunRequest(
                    run_key=run_key,
                    partition_key=day.isoformat(),
                    run_config=selection_run_config(SelectionMode.BATCH, run_key),
                    tags={"exchange/batch_id": run_key, "exchange/records": str(len(refs)),
                          "exchange/bus_range": bus_range[:200]},
                ))
        context.log.info(f"{len(events)} events → {len(run_requests)} batch run(s)")
        return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(next_cursor))

    return record_events_sensor
