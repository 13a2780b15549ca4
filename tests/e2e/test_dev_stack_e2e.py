"""End to end, as a user runs it: API, relay, tokenizer and `dg dev` (webserver + daemon) as
subprocesses; records posted over HTTP on two receipt days; everything read back through the
status endpoint, Postgres and Dagster's GraphQL API."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from exchange_assets.defs.partitions import daily_receipt_partitions_def
from exchange_core.dev_stack import DevPorts, DevStack
from exchange_core.services.processes import free_port
from support.dagster_graphql import DagsterGraphQL
from support.pipeline import days_ago, ingest_api_on, post_records
from support.records import canary_record, v1_record
from support.waiting import wait_for

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


# --------------------------------------------------------------------------- the UI in a real browser

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap.sh); no Playwright browser download
# Without the background-networking flags Chromium keeps dialing Google's hosts, which this closed
# network refuses; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def code_location_name(graphql: DagsterGraphQL) -> str:
    data = graphql.query("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    (entry,) = data["workspaceOrError"]["locationEntries"]
    return entry["name"]


def dismiss_first_visit_dialog(page) -> None:
    """The webserver greets a new browser profile with a newsletter dialog; it hides the graph."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5000)
    except PlaywrightTimeout:
        return
    skip.click()


def graph_label_x(page, text: str, graph_top: float) -> float:
    """The x of the asset-graph label `text` (the same words also appear in the breadcrumbs)."""
    for label in page.get_by_text(text, exact=True).all():
        box = label.bounding_box()
        if box and box["y"] > graph_top:
            return box["x"]
    raise AssertionError(f"{text!r} is not drawn in the asset graph")


def test_dagster_ui_in_chromium_shows_lineage_materialized_partitions_and_the_backfill_dialog(stack):
    from ingest_api.partners import create_partner

    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        partner = create_partner(conn, f"ui-{uuid.uuid4().hex[:8]}")
    accepted = post_records(stack.ingest_url, partner.api_key, [v1_record() for _ in range(5)])

    def canonical_now():
        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            return conn.execute("SELECT count(*) FROM canonical.persons WHERE event_id = ANY(%s::uuid[])",
                                ([a["event_id"] for a in accepted],)).fetchone()[0] == 5
    assert wait_for(canonical_now, timeout_s=300), "records did not become canonical"
    today = days_ago(0).isoformat()
    graphql = DagsterGraphQL(stack.dagster_url)
    wait_for(lambda: today in graphql.materialized_partitions(["canonical", "persons"]), timeout_s=60)
    location = code_location_name(graphql)
    DOCS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # the first graph render on a busy 2-core machine

            # Lineage: raw → tokenized → canonical, each asset inside its group, drawn left to right.
            page.goto(f"{stack.dagster_url}/assets/canonical/persons?view=lineage&lineageScope=upstream&lineageDepth=3")
            dismiss_first_visit_dialog(page)
            expect(page.get_by_text("ingested_records", exact=True).first).to_be_visible()
            tabs = page.get_by_role("tablist").first.bounding_box()
            graph_top = tabs["y"] + tabs["height"]  # above the tabs: the breadcrumbs
            x = {name: graph_label_x(page, name, graph_top)
                 for name in ("raw", "ingested_records", "tokenized", "records", "canonical", "persons")}
            assert x["raw"] < x["tokenized"] < x["canonical"], x
            assert x["ingested_records"] < x["records"] < x["persons"], x
            page.screenshot(path=str(DOCS / "dagster-asset-lineage.png"))

            # Partitions: today's partition is materialized, with the run's metadata.
            page.goto(f"{stack.dagster_url}/assets/canonical/persons?view=partitions&partition={today}")
            materialized = page.get_by_text(re.compile(r"^Materialized \((\d+)\)$")).first
            expect(materialized).to_be_visible()
            assert int(re.search(r"\d+", materialized.inner_text()).group()) >= 1
            expect(page.get_by_text("rows_written", exact=True)).to_be_visible()
            expect(page.get_by_text("schema_version", exact=True)).to_be_visible()
            page.screenshot(path=str(DOCS / "dagster-partitions.png"))

            # The backfill a data engineer launches for the v1 → v2 migration: the canonical group,
            # "Materialize all…", all partitions. Shown, not launched (the backfill test launches it).
            page.goto(f"{stack.dagster_url}/locations/{location}/asset-groups/canonical")
            page.get_by_role("button", name=re.compile("Materialize all")).first.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Launch runs to materialize 4 assets")).to_be_visible()
            dialog.get_by_role("button", name="All", exact=True).click()
            show_all = dialog.get_by_text("Show all partitions")  # it first offers the last 90 days
            try:
                show_all.wait_for(state="visible", timeout=5000)
                show_all.click()
            except PlaywrightTimeout:
                pass
            every_day = len(daily_receipt_partitions_def.get_partition_keys())
            expect(dialog.get_by_text(f"{every_day} partitions", exact=True)).to_be_visible()
            launch = dialog.get_by_role("button", name="Launch backfill")
            expect(launch).to_be_enabled()
            page.screenshot(path=str(DOCS / "dagster-backfill-dialog.png"))
            dialog.get_by_role("button", name="Cancel", exact=True).click()
        finally:
            browser.close()
    for name in ("dagster-asset-lineage.png", "dagster-partitions.png", "dagster-backfill-dialog.png"):
        assert (DOCS / name).stat().st_size > 10_000, name
