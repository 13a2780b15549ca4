"""The v1→v2 schema migration as a data engineer runs it: a v1 history over three days, the
versioned migration, stale partitions in Dagster, a backfill launched through the UI's GraphQL
API, interrupted (Dagster killed) and resumed, while ingestion keeps flowing."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import date

import dagster as dg
import psycopg
import pytest

from conftest import make_settings
from exchange_assets.defs.assets import CANONICAL_KEYS
from exchange_assets.lib import canonical, canonical_v1
from exchange_assets.lib.records import refs_for_partition
from exchange_assets.lib.tokenization import tokenize_records
from exchange_assets.lib.tokenizer_client import TokenizerClient
from exchange_core.db import migrate
from exchange_core.dev_stack import DevPorts, DevStack
from exchange_core.services.processes import free_port
from support.dagster_graphql import DagsterGraphQL
from support.pipeline import SERVICE_TOKEN, canonical_snapshot, days_ago, ingest_api_on, post_records, write_key_file
from support.process_tree import find_descendant
from support.records import v1_record
from support.servers import ServerThread
from support.waiting import wait_for
from tokenizer.app import create_app as create_tokenizer_app

pytestmark = pytest.mark.services

V1_PERSONS_QUERY = ("SELECT partner_id, record_id, token_t1, token_t2, token_t3, token_t4, token_t5, "
                    "token_key_id, birth_year, postal_code3, sex, schema_version, event_id, object_key, "
                    "received_at, partition_date FROM {table} WHERE partner_id = %s ORDER BY record_id")
V1_ENCOUNTERS_QUERY = ("SELECT partner_id, encounter_id, record_id, class, start_at, end_at, diagnoses, "
                       "observations, schema_version, event_id, object_key, received_at, partition_date "
                       "FROM {table} WHERE partner_id = %s ORDER BY encounter_id")


def v1_era_results(conn, partner_id: str, schema: str) -> dict:
    return {
        "persons": conn.execute(V1_PERSONS_QUERY.format(table=f"{schema}.persons"), (partner_id,)).fetchall(),
        "encounters": conn.execute(V1_ENCOUNTERS_QUERY.format(table=f"{schema}.encounters"), (partner_id,)).fetchall(),
    }


def record_with_several_codes() -> dict:
    record = v1_record()
    record["encounter"]["diagnoses"].append({"system": "http://snomed.info/sct", "code": "38341003"})
    record["encounter"]["observations"].append(
        {"system": "http://loinc.org", "code": "72166-2", "value": "Never smoker", "effective": "2026-11-30T09:21:00.5+01:00"})
    return record


@pytest.fixture(scope="module")
def v1_history(services, tmp_path_factory):
    """A database at schema v1 with canonical v1 rows on three days, made by the v1 derivation."""
    name = f"backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = services.database_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(database_url, target_version=3)
    home = tmp_path_factory.mktemp("backfill")
    key_file = write_key_file(home / "keys.json")
    settings = make_settings(services, database_url, object_store_url=f"file://{home / 'objects'}",
                             tokenizer_hmac_secret_file=str(key_file), tokenizer_service_token=SERVICE_TOKEN)
    from ingest_api.partners import create_partner

    with psycopg.connect(database_url) as conn:
        partner = create_partner(conn, f"history-{uuid.uuid4().hex[:8]}")
    days = [days_ago(12), days_ago(11), days_ago(10)]
    with ServerThread(create_tokenizer_app(settings)) as tokenizer, psycopg.connect(database_url, autocommit=True) as conn:
        client = TokenizerClient(tokenizer.base_url, SERVICE_TOKEN)
        for day in days:
            with ingest_api_on(settings, day) as api:
                post_records(api.base_url, partner.api_key, [record_with_several_codes() for _ in range(15)])
            tokenize_records(conn, client, refs_for_partition(conn, day), run_id="v1-era")
            canonical_v1.publish_partition(conn, day, full=True)
        client.close()
        before = v1_era_results(conn, partner.partner_id, "canonical")
    yield {"database_url": database_url, "settings": settings, "home": home, "partner": partner,
           "days": days, "v1_results": before, "name": name}
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        for database in (name, f"{name}_dagster"):
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def report_v1_era_materializations(dagster_home, days: list[date]) -> None:
    """What the v1 deployment's runs recorded: each canonical partition at code version v1."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get() as instance:
        for key in CANONICAL_KEYS.values():
            for day in days:
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=key, partition=day.isoformat(), tags={"dagster/code_version": "canonical-v1"}))
    del os.environ["DAGSTER_HOME"]


def stale_statuses(graphql: DagsterGraphQL, days: list[date]) -> dict[str, list[str]]:
    data = graphql.query(
        """query Stale($keys: [AssetKeyInput!], $partitions: [String!]) {
             assetNodes(assetKeys: $keys) { assetKey { path } staleStatusByPartition(partitions: $partitions) } }""",
        {"keys": [{"path": key.path} for key in CANONICAL_KEYS.values()],
         "partitions": [d.isoformat() for d in days]})
    return {"/".join(n["assetKey"]["path"]): n["staleStatusByPartition"] for n in data["assetNodes"]}


def launch_backfill(graphql: DagsterGraphQL) -> str:
    data = graphql.query(
        """mutation Backfill($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"params": {"assetSelection": [{"path": key.path} for key in CANONICAL_KEYS.values()],
                    "allPartitions": True, "title": "canonical v1 → v2"}})
    result = data["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def backfill_state(graphql: DagsterGraphQL, backfill_id: str) -> tuple[str, list[str]]:
    data = graphql.query(
        """query B($id: String!) { partitionBackfillOrError(backfillId: $id) {
             ... on PartitionBackfill { status runs(limit: 100) { status } } } }""", {"id": backfill_id})
    backfill = data["partitionBackfillOrError"]
    return backfill["status"], [run["status"] for run in backfill["runs"]]


def test_v1_history_is_backfilled_to_v2_from_the_ui_path_interrupted_and_resumed(v1_history, services_root):
    database_url, partner, days = v1_history["database_url"], v1_history["partner"], v1_history["days"]
    home = v1_history["home"]
    stack = DevStack(
        root=services_root,
        ports=DevPorts(ingest=free_port(), tokenizer=free_port(), dagster=free_port()),
        env_overrides={"DATABASE_URL": database_url, "OBJECT_STORE_URL": v1_history["settings"].object_store_url,
                       "TOKENIZER_HMAC_SECRET_FILE": str(v1_history["settings"].tokenizer_hmac_secret_file),
                       "EXCHANGE_SENSOR_INTERVAL_S": "2"},
        dagster_home=home / "dagster_home", dagster_database=f"{v1_history['name']}_dagster", log=lambda _: None)
    stack.prepare()  # applies the v2 migration

    with psycopg.connect(database_url) as conn:
        # Expand step: v1 readers, now on the compatibility views, see exactly what they saw.
        assert v1_era_results(conn, partner.partner_id, "canonical_v1") == v1_history["v1_results"]
    report_v1_era_materializations(stack.dagster_home, days)
    try:
        stack.start()
        stack.wait_ready()
        graphql = DagsterGraphQL(stack.dagster_url)
        stale = stale_statuses(graphql, days)
        assert all(status == ["STALE"] * 3 for status in stale.values()), stale

        backfill_id = launch_backfill(graphql)
        # Ingestion keeps flowing while the backfill runs.
        live = post_records(stack.ingest_url, partner.api_key, [v1_record() for _ in range(10)])

        # Interrupt: once a backfill run has succeeded, kill the Dagster daemon (SIGKILL). `dg dev`
        # then shuts the webserver and code server down; runs already launched finish. A backfill
        # runs one run at a time (dagster.yaml), so its later runs are still queued: only a live
        # daemon starts them.
        assert wait_for(lambda: "SUCCESS" in backfill_state(graphql, backfill_id)[1], timeout_s=240, interval_s=0.3)
        status, _ = backfill_state(graphql, backfill_id)
        assert status == "REQUESTED", "the backfill finished before it could be interrupted"
        dagster = stack.processes.pop("dagster")
        daemon_pid = find_descendant(dagster.pid, b"dagster._daemon")
        os.kill(daemon_pid, signal.SIGKILL)
        dagster.wait(timeout=180)
        interrupted = backfill_run_statuses_in_db(stack)
        assert "QUEUED" in interrupted and "SUCCESS" in interrupted, interrupted  # stopped halfway

        # Resume: start Dagster again; the daemon picks the backfill up where it stopped.
        stack.restart_dagster()
        stack.wait_ready()
        assert wait_for(lambda: backfill_state(graphql, backfill_id)[0] in ("COMPLETED", "COMPLETED_SUCCESS"), timeout_s=420, interval_s=2), \
            backfill_state(graphql, backfill_id)
        resumed = backfill_state(graphql, backfill_id)[1]
        assert len(resumed) == len(interrupted) and set(resumed) == {"SUCCESS"}, (interrupted, resumed)

        def live_records_canonical():
            with psycopg.connect(database_url) as conn:
                return conn.execute("SELECT count(*) FROM exchange.tokenized_records WHERE event_id = ANY(%s::uuid[]) "
                                    "AND canonical_at IS NOT NULL", ([r["event_id"] for r in live],)).fetchone()[0] == 10
        assert wait_for(live_records_canonical, timeout_s=300, interval_s=2)
        stale_after = stale_statuses(graphql, days)
        assert all(status == ["FRESH"] * 3 for status in stale_after.values()), stale_after
    finally:
        stack.stop()

    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in canonical.CANONICAL_TABLES:
            versions = conn.execute(f"SELECT DISTINCT schema_version FROM canonical.{table} WHERE partner_id = %s",
                                    (partner.partner_id,)).fetchall()
            assert versions == [(2,)], (table, versions)
        snapshot = canonical_snapshot(conn, partner.partner_id)
        assert len(snapshot["persons"]) == 45 + 10  # history + live, each once
        assert len(snapshot["conditions"]) == 2 * 45 + 10 and len(snapshot["observations"]) == 2 * 45 + 10
        # v1 readers still get the v1-era answers from the views, now computed from v2 rows.
        after = v1_era_results(conn, partner.partner_id, "canonical_v1")
        history_ids = {row[1] for row in v1_history["v1_results"]["persons"]}
        after = {"persons": [r for r in after["persons"] if r[1] in history_ids],
                 "encounters": [r for r in after["encounters"] if r[2] in history_ids]}
        assert after == v1_history["v1_results"]
        # The interrupted, resumed backfill equals an uninterrupted derivation of the same days.
        for day in days:
            canonical.publish_day(conn, day, full=True)
        assert canonical_snapshot(conn, partner.partner_id) == snapshot


def backfill_run_statuses_in_db(stack) -> list[str]:
    """The statuses of the runs the backfill had created when it was interrupted (read from
    Dagster's storage: the webserver is down with the daemon)."""
    url = stack.env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{stack.dagster_database}"
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
            "WHERE t.key = 'dagster/backfill' ORDER BY r.create_timestamp")]
