"""raw/ingested_records → tokenized/records → canonical/{persons, encounters}.

Every asset is partitioned by UTC receipt day and selects its records the same way:
- mode "batch": the records of one sensor batch (run config `batch_id`);
- mode "full" (default; UI backfills): every record of the day, re-derived from the ledger
  and the raw objects, not from the bus;
- mode "redrive": the day's open dead letters.
Writes are idempotent upserts, so a retried run or a replayed event changes nothing.
"""


from collections import Counter
from datetime import date, timedelta
from enum import Enum

import dagster as dg

from exchange_assets.defs.partitions import daily_receipt_partitions_def
from exchange_assets.defs.resources import EventBusResource, PostgresResource, TokenizerResource
from exchange_assets.lib import canonical
from exchange_assets.lib.dead_letters import publish_dead_letters, record_dead_letters, resolve_dead_letters
from exchange_assets.lib.records import (
    RecordRef, partition_counts, refs_for_batch, refs_for_partition, refs_for_redrive,
)
from exchange_assets.lib.tokenization import find_pii_keys, tokenize_records

RAW_GROUP = "raw"
TOKENIZED_GROUP = "tokenized"
CANONICAL_GROUP = "canonical"

RAW_INGESTED_RECORDS = dg.AssetKey(["raw", "ingested_records"])
TOKENIZED_RECORDS = dg.AssetKey(["tokenized", "records"])
CANONICAL_PERSONS = dg.AssetKey(["canonical", "persons"])
CANONICAL_ENCOUNTERS = dg.AssetKey(["canonical", "encounters"])
CANONICAL_CONDITIONS = dg.AssetKey(["canonical", "conditions"])
CANONICAL_OBSERVATIONS = dg.AssetKey(["canonical", "observations"])
CANONICAL_KEYS = {
    "persons": CANONICAL_PERSONS,
    "encounters": CANONICAL_ENCOUNTERS,
    "conditions": CANONICAL_CONDITIONS,
    "observations": CANONICAL_OBSERVATIONS,
}

# Bump when the canonical model or its derivation changes: the UI then marks materialized
# partitions stale, and a data engineer backfills them (v1 → v2: the normalized model).
CANONICAL_CODE_VERSION = "canonical-v2"

# A UI backfill of many days runs up to 200 days per run, not one run per day: a run costs a
# process start and a code load, a day without records costs two queries.
RECORD_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=200)

# Transient faults (tokenizer down, serialization failures, timeouts) retry with backoff.
NETWORK_RETRY_POLICY = dg.RetryPolicy(
    max_retries=6, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


class SelectionMode(str, Enum):
    FULL = "full"
    BATCH = "batch"
    REDRIVE = "redrive"


class RecordSelection(dg.Config):
    """Which records of the partition this run covers."""

    mode: SelectionMode = SelectionMode.FULL
    batch_id: str | None = None


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The UTC days this run covers: one for sensor runs, up to 100 for backfill runs."""
    window = context.partition_time_window
    day, end = window.start.date(), window.end.date()
    days = []
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def select_refs(conn, config: RecordSelection, days: list[date]) -> list[RecordRef]:
    if config.mode == SelectionMode.BATCH:
        if not config.batch_id:
            raise dg.Failure("mode 'batch' needs a batch_id")
        wanted = set(days)
        return [ref for ref in refs_for_batch(conn, config.batch_id) if ref.partition_date in wanted]
    select = refs_for_redrive if config.mode == SelectionMode.REDRIVE else refs_for_partition
    return [ref for day in days for ref in select(conn, day)]


def sum_counts(conn, days: list[date]) -> dict[str, int]:
    total = {"accepted": 0, "tokenized": 0, "dead_lettered": 0}
    for day in days:
        for name, value in partition_counts(conn, day).items():
            total[name] += value
    return total


@dg.asset(
    key=RAW_INGESTED_RECORDS,
    partitions_def=daily_receipt_partitions_def,
    group_name=RAW_GROUP,
    backfill_policy=RECORD_BACKFILL_POLICY,
    kinds={"s3", "postgres"},
    tags={"classification": "phi"},
    description=(
        "Raw partner payloads, exactly as received, in the raw-objects bucket (written once by "
        "the ingest API; they hold PHI). This asset records the day's manifest from the ingest "
        "ledger: how many records, from how many partners, in which payload versions."
    ),
)
def raw_ingested_records(
    context: dg.AssetExecutionContext, config: RecordSelection, db: PostgresResource
) -> dg.MaterializeResult:
    days = partition_days(context)
    with db.connect() as conn:
        refs = select_refs(conn, config, days)
    versions = Counter(str(ref.schema_version) for ref in refs)
    return dg.MaterializeResult(metadata={
        "records": len(refs),
        "partners": len({ref.partner_id for ref in refs}),
        "payload_versions": dict(versions),
        "selection": config.mode.value,
        "batch_id": config.batch_id or "",
    })


@dg.asset(
    key=TOKENIZED_RECORDS,
    deps=[RAW_INGESTED_RECORDS],
    partitions_def=daily_receipt_partitions_def,
    group_name=TOKENIZED_GROUP,
    backfill_policy=RECORD_BACKFILL_POLICY,
    kinds={"postgres"},
    tags={"classification": "tokenized"},
    retry_policy=NETWORK_RETRY_POLICY,
    description=(
        "exchange.tokenized_records: each record de-identified by the tokenizer service (which "
        "reads and hash-verifies the raw object itself): OpenToken T1-T5 match tokens with their "
        "key id, plus the clinical part. Permanent faults go to exchange.dead_letter_records and "
        "the .dlq topic with a reason code; the rest of the batch goes on."
    ),
    check_specs=[
        dg.AssetCheckSpec("accepted_equals_tokenized_plus_dead_lettered", asset=TOKENIZED_RECORDS,
                          description="Per day: ledger accepted = tokenized + open dead letters."),
        dg.AssetCheckSpec("no_plaintext_pii", asset=TOKENIZED_RECORDS, blocking=True,
                          description="No key from the PII list in any de-identified record."),
    ],
)
def tokenized_records(
    context: dg.AssetExecutionContext,
    config: RecordSelection,
    db: PostgresResource,
    tokenizer: TokenizerResource,
    event_bus: EventBusResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    run_id = context.run.run_id
    client = tokenizer.client()
    try:
        with db.connect() as conn:
            refs = select_refs(conn, config, days)
            outcome = tokenize_records(conn, client, refs, run_id=run_id, chunk_size=tokenizer.chunk_size)
            record_dead_letters(conn, outcome.dead_letters, run_id)
            publish_dead_letters(conn, event_bus.event_bus_url, outcome.dead_letters)
            resolved = resolve_dead_letters(conn, outcome.tokenized)
            counts = sum_counts(conn, days)
            pii_paths = _pii_paths(conn, outcome.tokenized)
    finally:
        client.close()
    for letter in outcome.dead_letters:
        context.log.warning(
            f"dead-lettered event {letter.ref.event_id}: {letter.reason_code}")
    balanced = counts["accepted"] == counts["tokenized"] + counts["dead_lettered"]
    # A sensor batch sees a day still filling up (later events are in flight): a mismatch then is
    # a warning; a full re-derivation or redrive must balance.
    severity = dg.AssetCheckSeverity.WARN if config.mode == SelectionMode.BATCH else dg.AssetCheckSeverity.ERROR
    return dg.MaterializeResult(
        metadata={
            "records": len(refs),
            "tokenized": len(outcome.tokenized),
            "dead_lettered": len(outcome.dead_letters),
            "dead_letter_reasons": dict(Counter(l.reason_code for l in outcome.dead_letters)),
            "redriven": resolved,
            "token_key_ids": sorted(outcome.key_ids),
            "selection": config.mode.value,
            "day_accepted": counts["accepted"],
            "day_tokenized": counts["tokenized"],
            "day_dead_lettered": counts["dead_lettered"],
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="accepted_equals_tokenized_plus_dead_lettered", passed=balanced,
                severity=severity, metadata=counts),
            dg.AssetCheckResult(
                check_name="no_plaintext_pii", passed=not pii_paths,
                metadata={"records_checked": len(outcome.tokenized), "violations": len(pii_paths),
                          "first_violation_path": pii_paths[0] if pii_paths else ""}),
        ],
    )


def _pii_paths(conn, event_ids: list[str]) -> list[str]:
    if not event_ids:
        return []
    found: list[str] = []
    rows = conn.execute("SELECT deidentified FROM exchange.tokenized_records WHERE event_id = ANY(%s::uuid[])",
                        (event_ids,))
    for (document,) in rows:
        found.extend(find_pii_keys(document))
    return found


_CANONICAL_DESCRIPTIONS = {
    "persons": ("canonical.persons: one row per (partner_id, record_id): the five OpenToken match "
                "tokens with their key id, birth year, ZIP3 and sex. No PII."),
    "encounters": "canonical.encounters: one row per (partner_id, encounter_id): class and period.",
    "conditions": ("canonical.conditions: one row per condition (FHIR Condition, or a v1 diagnosis "
                   "upcast): code system, code, display, onset, encounter."),
    "observations": ("canonical.observations: one row per observation: code system, code, numeric "
                     "or text value with unit, effective time, encounter."),
}


@dg.multi_asset(
    name="canonical_tables",
    partitions_def=daily_receipt_partitions_def,
    group_name=CANONICAL_GROUP,
    backfill_policy=RECORD_BACKFILL_POLICY,
    specs=[
        dg.AssetSpec(
            key, deps=[TOKENIZED_RECORDS], kinds={"postgres"}, tags={"classification": "deidentified"},
            code_version=CANONICAL_CODE_VERSION,
            description=_CANONICAL_DESCRIPTIONS[table] + " Every row carries schema_version, "
            "partner_id and its source event_id and object_key (record-level lineage).")
        for table, key in CANONICAL_KEYS.items()
    ],
    check_specs=[
        dg.AssetCheckSpec("every_person_has_tokens", asset=CANONICAL_PERSONS,
                          description="No person row lacks a token column or key id."),
        *[dg.AssetCheckSpec("schema_version_is_current", asset=key,
                            description="Every row of the day carries the current schema version.")
          for key in CANONICAL_KEYS.values()],
    ],
)
def canonical_tables(context: dg.AssetExecutionContext, config: RecordSelection, db: PostgresResource):
    days = partition_days(context)
    written = canonical.CanonicalCounts()
    with db.connect() as conn:
        for day in days:
            written.add(canonical.publish_day(conn, day, full=config.mode == SelectionMode.FULL))
        rows = canonical.table_counts(conn, days)
        tokenless = canonical.persons_without_tokens(conn, days)
        stale = {table: canonical.rows_with_other_schema_version(conn, days, table)
                 for table in canonical.CANONICAL_TABLES}
    version = canonical.CANONICAL_SCHEMA_VERSION
    for table, key in CANONICAL_KEYS.items():
        checks = [dg.AssetCheckResult(
            check_name="schema_version_is_current", asset_key=key, passed=stale[table] == 0,
            metadata={"expected": version, "other_version_rows": stale[table]})]
        if table == "persons":
            checks.append(dg.AssetCheckResult(
                check_name="every_person_has_tokens", asset_key=key, passed=tokenless == 0,
                metadata={"rows_without_tokens": tokenless}))
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={"rows_written": getattr(written, table), "partition_rows": rows[table],
                      "schema_version": version, "dagster/row_count": rows[table]},
            check_results=checks,
        )
