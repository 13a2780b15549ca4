"""Jobs over the record assets: the sensor's batch job and the dead-letter redrive job."""

from __future__ import annotations

import dagster as dg

from exchange_assets.defs.assets import (
    CANONICAL_GROUP, RAW_INGESTED_RECORDS, TOKENIZED_RECORDS, SelectionMode,
)

RECORD_ASSET_OPS = ("raw__ingested_records", "tokenized__records", "canonical_tables")

record_assets_selection = (
    dg.AssetSelection.assets(RAW_INGESTED_RECORDS, TOKENIZED_RECORDS) | dg.AssetSelection.groups(CANONICAL_GROUP)
)

ingest_batch_job = dg.define_asset_job(
    name="ingest_batch_job",
    selection=record_assets_selection,
    description="One sensor batch of newly published records for one day: raw → tokenized → canonical.",
)

redrive_dead_letters_job = dg.define_asset_job(
    name="redrive_dead_letters_job",
    selection=dg.AssetSelection.assets(TOKENIZED_RECORDS) | dg.AssetSelection.groups(CANONICAL_GROUP),
    description="Retry the day's open dead letters (after the cause was fixed); successes go canonical.",
    config={"ops": {op: {"config": {"mode": SelectionMode.REDRIVE.name}}
                    for op in ("tokenized__records", "canonical_tables")}},
)


def selection_run_config(mode: SelectionMode, batch_id: str | None = None,
                         ops: tuple[str, ...] = RECORD_ASSET_OPS) -> dict:
    config = {"mode": mode.name}
    if batch_id:
        config["batch_id"] = batch_id
    return {"ops": {op: {"config": dict(config)} for op in ops}}
