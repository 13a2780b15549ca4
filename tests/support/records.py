"""Builders for v1 records used across tests (fictitious people only)."""

from __future__ import annotations

import uuid
from typing import Any


def v1_record(record_id: str | None = None, **patient_overrides: Any) -> dict[str, Any]:
    patient = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "birth_date": "1985-12-10",
        "sex": "female",
        "postal_code": "02139",
        "ssn": "456-78-9012",
        "mrn": "MRN-001",
    }
    patient.update(patient_overrides)
    return {
        "record_id": record_id or f"rec-{uuid.uuid4()}",
        "patient": patient,
        "encounter": {
            "encounter_id": f"enc-{uuid.uuid4()}",
            "start": "2026-11-30T09:15:00Z",
            "end": "2026-11-30T09:45:00Z",
            "class": "ambulatory",
            "diagnoses": [{"system": "http://snomed.info/sct", "code": "44054006",
                           "display": "Diabetes mellitus type 2"}],
            "observations": [{"system": "http://loinc.org", "code": "4548-4", "value": 6.3,
                              "unit": "%", "effective": "2026-11-30T09:20:00Z"}],
        },
    }


def canary_record(tag: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """A record whose PII values are unique strings that must never leak; returns (record, values)."""
    tag = tag or uuid.uuid4().hex[:10]
    first, last, mrn = f"Zqcanaryfirst{tag}", f"Zqcanarylast{tag}", f"MRNCANARY{tag}"
    ssn = "567-" + tag[:2].translate(str.maketrans("abcdef", "123456")).rjust(2, "1") + "-4321"
    record = v1_record(first_name=first, last_name=last, mrn=mrn, ssn=ssn)
    return record, [first, last, mrn, ssn]
