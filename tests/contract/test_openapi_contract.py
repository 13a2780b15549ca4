"""The served OpenAPI document is the reviewed contract in contracts/openapi.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from ingest_api.export_openapi import served_document

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "openapi.yaml"


def test_served_openapi_equals_contract():
    contract = yaml.safe_load(CONTRACT.read_text())
    served = served_document()
    # Semantic comparison (parsed documents), so YAML formatting is free to change.
    assert served == contract, (
        "served OpenAPI differs from contracts/openapi.yaml; if the change is deliberate run "
        "`python -m ingest_api.export_openapi > contracts/openapi.yaml` and review the diff"
    )


def test_contract_operations_have_stable_ids_and_problem_errors():
    contract = yaml.safe_load(CONTRACT.read_text())
    ingest = contract["paths"]["/v1/ingest"]["post"]
    assert ingest["operationId"] == "ingestRecordV1"
    for status in ("400", "401", "409", "413", "415", "422", "503"):
        assert "application/problem+json" in ingest["responses"][status]["content"]
    params = {p["name"]: p for p in ingest["parameters"]}
    assert params["Idempotency-Key"]["in"] == "header"
