"""The code location loads as the webserver and daemon load it: every job resolves, the asset
graph is raw → tokenized → canonical, and an unknown environment fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from exchange_assets.definitions import defs as load_defs

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def definitions(monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("EXCHANGE_ENV", "test")
    definitions = load_defs()
    dg.Definitions.validate_loadable(definitions)
    return definitions


def test_every_job_and_sensor_resolves(definitions):
    repository = definitions.get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs()}
    assert {"ingest_batch_job", "redrive_dead_letters_job"} <= jobs
    for name in jobs:
        assert repository.get_job(name).name == name
    sensors = {sensor.name for sensor in repository.sensor_defs}
    assert sensors == {"record_events_sensor", "dead_letter_redrive_sensor"}


def test_asset_graph_runs_raw_to_tokenized_to_canonical(definitions):
    graph = definitions.resolve_asset_graph()
    raw, tokenized = dg.AssetKey(["raw", "ingested_records"]), dg.AssetKey(["tokenized", "records"])
    canonical = {dg.AssetKey(["canonical", name]) for name in ("persons", "encounters", "conditions", "observations")}
    assert canonical <= graph.get_all_asset_keys()
    assert graph.get(tokenized).parent_keys == {raw}
    for key in canonical:
        assert graph.get(key).parent_keys == {tokenized}, key
        assert graph.get(key).partitions_def is not None


def test_an_unknown_environment_fails_closed(monkeypatch):
    monkeypatch.setenv("EXCHANGE_ENV", "staging")
    with pytest.raises(Exception, match="unknown EXCHANGE_ENV"):
        load_defs()


def test_dg_check_defs_accepts_the_project():
    env = {**os.environ, "EXCHANGE_ENV": "test"}
    result = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
