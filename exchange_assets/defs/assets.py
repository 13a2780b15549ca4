"""raw/ingested_records → tokenized/records → canonical/{persons, encounters}.

Every asset is partitioned by UTC receipt day and selects its records the same way:
- mode "batch": the records of one sensor batch (run config `batch_id`);
- mode "full" (default; UI backfills): every record of the day, re-derived from the ledger
  and the raw objects, not from the bus;
- mode "redrive": the day's open dead letters.
Writes are idempotent upserts, so a retried run or a replayed event changes nothing.
"""


from collections import Counter
from datetime import date
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

# Bump when the canonical model or its derivation changes: the UI then marks partitions stale.
CANONICAL_CODE_VERSION = "canonical-v1"

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


def partition_day(context: dg.AssetExecutionContext) -> date:
    return context.partition_time_window.start.date()


def select_refs(conn, config: RecordSelection, day: date) -> list[RecordRef]:
    if config.mode == SelectionMode.BATCH:
        if not config.batch_id:
            raise dg.Failure("mode 'batch' needs a batch_id")
        return [ref for ref in refs_for_batch(conn, config.batch_id) if ref.partition_date == day]
    if config.mode == SelectionMode.REDRIVE:
        return refs_for_redrive(conn, day)
    return refs_for_partition(conn, day)


@dg.asset(
    key=RAW_INGESTED_RECORDS,
    partitions_def=daily_receipt_partitions_def,
    group_name=RAW_GROUP,
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
    day = partition_day(context)
    with db.connect() as conn:
        refs = select_refs(conn, config, day)
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
    day = partition_day(context)
    run_id = context.run.run_id
    client = tokenizer.client()
    try:
        with db.connect() as conn:
            refs = select_refs(conn, config, day)
            outcome = tokenize_records(conn, client, refs, run_id=run_id, chunk_size=tokenizer.chunk_size)
            record_dead_letters(conn, outcome.dead_letters, run_id)
            publish_dead_letters(conn, event_bus.event_bus_url, outcome.dead_letters)
            resolved = resolve_dead_letters(conn, outcome.tokenized)
            counts = partition_counts(conn, day)
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


@dg.multi_asset(
    name="canonical_tables",
    partitions_def=daily_receipt_partitions_def,
    group_name=CANONICAL_GROUP,
    specs=[
        dg.AssetSpec(
            CANONICAL_PERSONS, deps=[TOKENIZED_RECORDS], kinds={"postgres"},
            tags={"classification": "deidentified"}, code_version=CANONICAL_CODE_VERSION,
            description=("canonical.persons: one row per (partner_id, record_id) with five match "
                         "tokens and their key id, birth year, ZIP3 and sex; lineage columns "
                         "event_id, object_key, schema_version.")),
        dg.AssetSpec(
            CANONICAL_ENCOUNTERS, deps=[TOKENIZED_RECORDS], kinds={"postgres"},
            tags={"classification": "deidentified"}, code_version=CANONICAL_CODE_VERSION,
            description=("canonical.encounters: one row per (partner_id, encounter_id) with class, "
                         "times, diagnosis codes and observations; lineage columns as persons.")),
    ],
    check_specs=[
        dg.AssetCheckSpec("every_person_has_tokens", asset=CANONICAL_PERSONS,
                          description="No person row lacks a token column or key id."),
        dg.AssetCheckSpec("schema_version_is_current", asset=CANONICAL_PERSONS,
                          description="Every row of the day carries the current schema version."),
        dg.AssetCheckSpec("schema_version_is_current", asset=CANONICAL_ENCOUNTERS,
                          description="Every row of the day carries the current schema version."),
    ],
)
def canonical_tables(context: dg.AssetExecutionContext, config: RecordSelection, db: PostgresResource):
    day = partition_day(context)
    with db.connect() as conn:
        counts = canonical.publish_partition(conn, day, full=config.mode == SelectionMode.FULL)
        rows = canonical.table_counts(conn, day)
        tokenless = canonical.persons_without_tokens(conn, day)
        stale = canonical.rows_with_other_schema_version(conn, day, canonical.CANONICAL_SCHEMA_VERSION)
    version = canonical.CANONICAL_SCHEMA_VERSION
    yield dg.MaterializeResult(
        asset_key=CANONICAL_PERSONS,
        metadata={"rows_written": counts.persons, "day_rows": rows["persons"], "schema_version": version,
                  "dagster/row_count": rows["persons"]},
        check_results=[
            dg.AssetCheckResult(check_name="every_person_has_tokens", asset_key=CANONICAL_PERSONS,
                                passed=tokenless == 0, metadata={"rows_without_tokens": tokenless}),
            dg.AssetCheckResult(check_name="schema_version_is_current", asset_key=CANONICAL_PERSONS,
                                passed=stale == 0, metadata={"expected": version, "other_version_rows": stale}),
        ],
    )
    yield dg.MaterializeResult(
        asset_key=CANONICAL_ENCOUNTERS,
        metadata={"rows_written": counts.encounters, "day_rows": rows["encounters"],
                  "schema_version": version, "dagster/row_count": rows["encounters"]},
        check_results=[
            dg.AssetCheckResult(check_name="schema_version_is_current", asset_key=CANONICAL_ENCOUNTERS,
                                passed=stale == 0, metadata={"expected": version, "other_version_rows": stale}),
        ],
    )
