"""End to end, as a user runs it: API, relay, tokenizer and `dg dev` (webserver + daemon) as
subprocesses; records posted over HTTP on two receipt days; everything read back through the
status endpoint, Postgres and Dagster's GraphQL API."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg
import pytest

from exchange_core.dev_stack import DevPorts, DevStack
from exchange_core.services.processes import free_port
from support.dagster_graphql import DagsterGraphQL
from support.pipeline import days_ago, ingest_api_on, post_records
from support.records import canary_record, v1_record

pytestmark = pytest.mark.services

RECORD_CHECKS = [
    (["tokenized", "records"], "accepted_equals_tokenized_plus_dead_lettered"),
    (["tokenized", "records"], "no_plaintext_pii"),
    (["canonical", "persons"], "every_person_has_tokens"),
    (["canonical", "persons"], "schema_version_is_current"),
    (["canonical", "encounters"], "schema_version_is_current"),
]


@pytest.fixture(scope="module")
def stack(services, services_root, tmp_path_factory):
    """The dev stack on the harness Postgres, in databases of its own."""
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = services.database_url.rsplit("/", 1)[0] + f"/{name}"
    home = tmp_path_factory.mktemp("e2e")
    dev = DevStack(
        root=services_root,
        ports=DevPorts(ingest=free_port(), tokenizer=free_port(), dagster=free_port()),
        env_overrides={"DATABASE_URL": database_url, "OBJECT_STORE_URL": f"file://{home / 'objects'}",
                       "EXCHANGE_SENSOR_INTERVAL_S": "2", "EXCHANGE_SENSOR_MAX_EVENTS": "200"},
        dagster_home=home / "dagster_home",
        dagster_database=f"{name}_dagster",
        log=lambda _: None,
    )
    dev.prepare()
    try:
        dev.start()
        dev.wait_ready()
        yield dev
    finally:
        dev.stop()
        with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
            for database in (name, f"{name}_dagster"):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def wait_for(predicate, timeout_s: float, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def test_records_posted_over_two_days_land_canonical_once_with_passing_checks(stack):
    from ingest_api.partners import create_partner
    from exchange_core.settings import Settings

    database_url = stack.env["DATABASE_URL"]
    with psycopg.connect(database_url) as conn:
        partner = create_partner(conn, f"e2e-{uuid.uuid4().hex[:8]}")
    canary, canary_values = canary_record()
    today_records = [canary] + [v1_record() for _ in range(219)]
    accepted = post_records(stack.ingest_url, partner.api_key, today_records)

    # The same API code on an earlier receipt day (the test's clock control): a second partition.
    earlier = days_ago(1)
    earlier_settings = Settings(**{k.lower(): v for k, v in stack.env.items()
                                   if k.lower() in Settings.model_fields})
    with ingest_api_on(earlier_settings, earlier) as api:
        accepted += post_records(api.base_url, partner.api_key, [v1_record() for _ in range(80)])
    event_ids = {a["event_id"] for a in accepted}
    assert len(event_ids) == 300

    def all_canonical():
        with psycopg.connect(database_url) as conn:
            return conn.execute(
                "SELECT count(*) FROM exchange.tokenized_records WHERE partner_id = %s "
                "AND canonical_at IS NOT NULL", (partner.partner_id,)).fetchone()[0] == 300

    assert wait_for(all_canonical, timeout_s=420), "records did not all become canonical"
    graphql = DagsterGraphQL(stack.dagster_url)

    def runs_settled():
        runs = [r for r in graphql.runs() if r["jobName"] == "ingest_batch_job"]
        return runs if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs) else None

    runs = wait_for(runs_settled, timeout_s=180)
    assert runs and {r["status"] for r in runs} == {"SUCCESS"}

    with psycopg.connect(database_url) as conn:
        persons = conn.execute(
            "SELECT event_id::text, partition_date FROM canonical.persons WHERE partner_id = %s",
            (partner.partner_id,)).fetchall()
        encounters = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM canonical.encounters "
                                  "WHERE partner_id = %s", (partner.partner_id,)).fetchone()
    assert sorted(p[0] for p in persons) == sorted(event_ids)  # each exactly once
    assert encounters == (300, 300)
    partitions = {p[1].isoformat() for p in persons}
    assert partitions == {days_ago(0).isoformat(), earlier.isoformat()}

    # What the UI shows: materializations per partition and passing checks on the last run of each.
    for asset in (["raw", "ingested_records"], ["tokenized", "records"], ["canonical", "persons"],
                  ["canonical", "encounters"]):
        assert partitions <= graphql.materialized_partitions(asset), asset
    for partition in partitions:
        latest = next(r for r in runs if r["tags"].get("dagster/partition") == partition)  # newest first
        for asset, check in RECORD_CHECKS:
            executions = [e for e in graphql.check_executions(asset, check) if e["runId"] == latest["runId"]]
            assert executions and all(e["evaluation"]["success"] for e in executions if e["evaluation"]), \
                (partition, asset, check, executions)

    # The partner sees the whole journey.
    status = httpx.get(f"{stack.ingest_url}/v1/records/{canary['record_id']}",
                       headers={"Authorization": f"Bearer {partner.api_key}"}).json()
    assert [s["status"] for s in status["history"]] == ["accepted", "published", "tokenized", "canonical"]

    # The PII canary is nowhere in Dagster's storage (runs, event log, ticks) or the stack's logs.
    dagster_db = database_url + "_dagster"
    with psycopg.connect(dagster_db) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        dumped = "\n".join(
            str(conn.execute(f'SELECT coalesce(string_agg(t::text, E\'\\n\'), \'\') FROM "{table}" t').fetchone()[0])
            for table in tables)
    assert "record_events_sensor" in dumped and "ingest_batch_job" in dumped
    logs = "".join(path.read_text(errors="replace") for path in (stack.root / "logs").glob("*.log"))
    compute_logs = "".join(path.read_text(errors="replace")
                           for path in stack.dagster_home.rglob("*") if path.is_file() and path.suffix in (".err", ".out", ".log"))
    for value in canary_values:
        assert value not in dumped
        assert value not in logs
        assert value not in compute_logs
