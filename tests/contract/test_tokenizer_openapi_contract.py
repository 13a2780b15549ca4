"""The tokenizer's served OpenAPI document is the reviewed contract in contracts/tokenizer.openapi.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from tokenizer.export_openapi import served_document

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "tokenizer.openapi.yaml"


def test_served_tokenizer_openapi_equals_contract():
    contract = yaml.safe_load(CONTRACT.read_text())
    served = served_document()
    # Semantic comparison (parsed documents), so YAML formatting is free to change.
    assert served == contract, (
        "served tokenizer OpenAPI differs from contracts/tokenizer.openapi.yaml; if the change "
        "is deliberate run `python -m tokenizer.export_openapi > contracts/tokenizer.openapi.yaml` "
        "and review the diff"
    )


def test_operations_have_stable_ids_service_auth_and_problem_errors():
    contract = yaml.safe_load(CONTRACT.read_text())
    paths = contract["paths"]
    assert paths["/v1/tokens"]["post"]["operationId"] == "createTokens"
    assert paths["/v1/deidentify"]["post"]["operationId"] == "deidentifyRecords"
    assert contract["security"] == [{"serviceToken": []}]
    assert contract["components"]["securitySchemes"]["serviceToken"]["scheme"] == "bearer"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert paths[path]["get"]["security"] == []
    deidentify = paths["/v1/deidentify"]["post"]["responses"]
    for status in ("400", "401", "413", "415", "422", "503"):
        assert "application/problem+json" in deidentify[status]["content"]


def test_contract_names_the_fields_the_pipeline_consumes():
    schemas = yaml.safe_load(CONTRACT.read_text())["components"]["schemas"]
    assert set(schemas["DeidentifiedRecord"]["required"]) == {
        "schema_version", "source_format", "person", "encounters", "conditions", "observations"}
    assert set(schemas["PersonOut"]["properties"]) == {
        "tokens", "key_id", "birth_year", "postal_code3", "sex"}
    assert set(schemas["DeidentifyFailed"]["properties"]["reason_code"]["enum"]) == {
        "hash_mismatch", "object_not_found", "unparseable_payload", "invalid_payload",
        "unsupported_format"}
