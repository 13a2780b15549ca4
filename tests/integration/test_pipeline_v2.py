"""FHIR R4 bundles through the whole pipeline: v2 ingest → tokenizer → canonical v2 tables.

For each sample bundle the canonical counts of encounters, conditions and observations must
equal the counts of those resources in the file (computed here from the JSON), with zero dead
letters; and no PII value from any bundle may reach canonical tables, events, Dagster's event
log or logs.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import httpx
import pytest

from conftest import REPO_ROOT, make_settings
from exchange_assets.defs.jobs import selection_run_config
from exchange_assets.defs.assets import SelectionMode
from support.pipeline import (
    RECORD_ASSETS, SERVICE_TOKEN, days_ago, ingest_api_on, pipeline_resources, relay_to_event_log,
    write_key_file,
)
from support.servers import ServerThread
from tokenizer.app import create_app as create_tokenizer_app

pytestmark = pytest.mark.services

SAMPLES = sorted(p for p in (REPO_ROOT / "tests" / "data" / "fhir").rglob("*.json")
                 if not p.name.startswith(("hospitalInformation", "practitionerInformation")))


def resource_counts(bundle: dict) -> Counter:
    return Counter(entry["resource"]["resourceType"] for entry in bundle["entry"])


def patient_pii_values(bundle: dict) -> set[str]:
    """Names, address parts, telecom and identifier values of the Patient (≥ 5 characters)."""
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    values: set[str] = set()
    for name in patient.get("name", []):
        values.update(name.get("given", []))
        values.add(name.get("family", ""))
    for address in patient.get("address", []):
        values.update(address.get("line", []))
        values.add(address.get("postalCode", ""))
    values.update(t.get("value", "") for t in patient.get("telecom", []))
    values.update(i.get("value", "") for i in patient.get("identifier", []))
    return {v for v in values if isinstance(v, str) and len(v) >= 5}


@pytest.fixture(scope="module")
def v2_settings(services, database_url, tmp_path_factory):
    key_file = write_key_file(tmp_path_factory.mktemp("keys") / "keys.json")
    return make_settings(services, database_url, tokenizer_hmac_secret_file=str(key_file),
                         tokenizer_service_token=SERVICE_TOKEN)


def test_every_sample_bundle_lands_in_canonical_v2_with_exact_counts_and_no_pii(
        v2_settings, partner, database_url, db, captured_logs):
    assert len(SAMPLES) >= 5
    day = days_ago(90)
    bundles = {path.name: json.loads(path.read_bytes()) for path in SAMPLES}
    accepted = {}
    with ingest_api_on(v2_settings, day) as api, httpx.Client(timeout=60) as client:
        for path in SAMPLES:
            response = client.post(
                f"{api.base_url}/v2/ingest", content=path.read_bytes(),
                headers={"Authorization": f"Bearer {partner.api_key}", "Content-Type": "application/fhir+json",
                         "Idempotency-Key": str(uuid.uuid4())})
            assert response.status_code == 202, response.text
            accepted[path.name] = response.json()
    relay_to_event_log(database_url)

    with ServerThread(create_tokenizer_app(v2_settings)) as tokenizer, dg.instance_for_test() as instance:
        result = dg.materialize(
            RECORD_ASSETS, partition_key=day.isoformat(), instance=instance,
            resources=pipeline_resources(database_url, tokenizer.base_url),
            run_config=selection_run_config(SelectionMode.FULL))
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        dagster_storage = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))

    assert db.execute("SELECT count(*) FROM exchange.dead_letter_records WHERE partner_id = %s",
                      (partner.partner_id,)).fetchone()[0] == 0
    for name, bundle in bundles.items():
        expected = resource_counts(bundle)
        event_id = accepted[name]["event_id"]
        got = {table: db.execute(f"SELECT count(*) FROM canonical.{table} WHERE event_id = %s",
                                 (event_id,)).fetchone()[0]
               for table in ("persons", "encounters", "conditions", "observations")}
        assert got == {"persons": 1, "encounters": expected["Encounter"], "conditions": expected["Condition"],
                       "observations": expected["Observation"]}, name
        versions = {db.execute(f"SELECT DISTINCT schema_version FROM canonical.{t} WHERE event_id = %s",
                               (event_id,)).fetchone() for t in ("persons", "encounters")}
        assert versions == {(2,)}

    canonical_dump = "\n".join(
        repr(db.execute(f"SELECT * FROM canonical.{t} WHERE partner_id = %s", (partner.partner_id,)).fetchall())
        for t in ("persons", "encounters", "conditions", "observations"))
    events = repr(db.execute("SELECT payload, message_key FROM ingest.outbox_events WHERE payload->>'partner_id' = %s",
                             (partner.partner_id,)).fetchall())
    events += repr(db.execute("SELECT payload FROM exchange.event_log WHERE payload->>'partner_id' = %s",
                              (partner.partner_id,)).fetchall())
    tokenized = repr(db.execute("SELECT deidentified FROM exchange.tokenized_records WHERE partner_id = %s",
                                (partner.partner_id,)).fetchall())
    logs = captured_logs.getvalue()
    assert "canonical_tables" in dagster_storage and len(events) > 1000
    for name, bundle in bundles.items():
        for value in patient_pii_values(bundle):
            for where, haystack in (("canonical", canonical_dump), ("events", events),
                                    ("tokenized", tokenized), ("dagster", dagster_storage), ("logs", logs)):
                assert value not in haystack, (name, where)
