"""Build the v1 demo records from Synthea FHIR bundles (Apache-2.0 sources only).

Each v1 record is one patient and one of their encounters, with that encounter's conditions
and numeric/string observations, exactly as a partner's flat feed would carry them:
    python samples/build_v1_samples.py ../shared/data/synthea/smart-on-fhir__generated-sample-data samples/v1
Run once; the output is committed (see samples/ATTRIBUTION.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _official_name(patient: dict) -> tuple[str, str]:
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    return (name.get("given") or [""])[0], name.get("family", "")


def _ssn(patient: dict) -> str | None:
    for identifier in patient.get("identifier", []):
        codings = identifier.get("type", {}).get("coding", [])
        if any(c.get("code") == "SS" for c in codings):
            return identifier.get("value")
    return None


def _mrn(patient: dict) -> str | None:
    for identifier in patient.get("identifier", []):
        codings = identifier.get("type", {}).get("coding", [])
        if any(c.get("code") == "MR" for c in codings):
            return identifier.get("value")
    return None


def _ref_id(reference: str | None) -> str | None:
    return reference.removeprefix("urn:uuid:").split("/")[-1] if reference else None


def records_from_bundle(bundle: dict, per_patient: int) -> list[dict]:
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    encounters = sorted((r for r in resources if r["resourceType"] == "Encounter"),
                        key=lambda r: r.get("period", {}).get("start", ""), reverse=True)[:per_patient]
    first, last = _official_name(patient)
    address = (patient.get("address") or [{}])[0]
    person = {"first_name": first, "last_name": last, "birth_date": patient["birthDate"],
              "sex": patient.get("gender", "unknown"), "postal_code": address.get("postalCode") or "00000"}
    if ssn := _ssn(patient):
        person["ssn"] = ssn
    if mrn := _mrn(patient):
        person["mrn"] = mrn
    records = []
    for encounter in encounters:
        enc_id = encounter["id"]
        diagnoses = [
            {"system": coding["system"], "code": coding["code"], **({"display": coding["display"]} if "display" in coding else {})}
            for r in resources if r["resourceType"] == "Condition" and _ref_id((r.get("encounter") or {}).get("reference")) == enc_id
            for coding in r.get("code", {}).get("coding", [])[:1]
        ]
        observations = []
        for r in resources:
            if r["resourceType"] != "Observation" or _ref_id((r.get("encounter") or {}).get("reference")) != enc_id:
                continue
            coding = r.get("code", {}).get("coding", [{}])[0]
            if "valueQuantity" in r:
                value, unit = r["valueQuantity"].get("value"), r["valueQuantity"].get("unit")
            elif "valueCodeableConcept" in r:
                value, unit = r["valueCodeableConcept"].get("text") or r["valueCodeableConcept"]["coding"][0].get("display"), None
            elif "valueString" in r:
                value, unit = r["valueString"], None
            else:
                continue
            if value is None or "effectiveDateTime" not in r:
                continue
            observations.append({"system": coding.get("system", "http://loinc.org"), "code": coding.get("code", "unknown"),
                                 "value": value, **({"unit": unit} if unit else {}), "effective": r["effectiveDateTime"]})
        period = encounter.get("period", {})
        record = {
            "record_id": f"synthea-{patient['id'][:8]}-{enc_id[:8]}",
            "patient": person,
            "encounter": {"encounter_id": enc_id, "start": period["start"],
                          **({"end": period["end"]} if "end" in period else {}),
                          "class": encounter.get("class", {}).get("code", "unknown"),
                          "diagnoses": diagnoses, "observations": observations},
        }
        records.append(record)
    return records


def main(source: str, target: str, per_patient: int = 2) -> int:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(Path(source).glob("*.json")):
        bundle = json.loads(path.read_text())
        if not any(e["resource"]["resourceType"] == "Patient" for e in bundle.get("entry", [])):
            continue
        for record in records_from_bundle(bundle, per_patient):
            (out / f"{record['record_id']}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            written += 1
    print(f"wrote {written} v1 records to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
