"""Structural validation of the FHIR R4 bundles that `POST /v2/ingest` accepts.

This is not a FHIR profile validator. It checks what the platform relies on downstream, fast
enough for 4 MB bundles with thousands of entries (one pass over the entries, one iterative walk
over the resources; no recursion, so nesting depth cannot exhaust the stack):

- the body is a JSON object with `resourceType == "Bundle"` (if not, nothing else is checked);
- `type` is `collection`, `batch` or `transaction`;
- `entry` is an array of objects, each with a `resource` object whose `resourceType` is a
  non-empty string; `fullUrl`, when present, is a string; for `batch` and `transaction` every
  entry has a `request` object with a `method` (GET, HEAD, POST, PUT, DELETE, PATCH) and a
  non-empty `url`;
- exactly one entry holds a `Patient` (rule `exactly-one-patient`);
- every string field named `reference`, anywhere inside the entries' resources (contained
  resources included), that starts with `urn:uuid:` equals the `fullUrl` of an entry (rule
  `reference-resolves`). Conditional references (`Practitioner?identifier=...`,
  `Organization?...`, `Location?...`), relative (`Patient/123`), absolute (`https://...`) and
  contained (`#id`) references are legal and are not resolved here: conditional and relative
  ones are resolved by the FHIR server that loads the bundle, contained ones against the
  resource's `contained` list. (`urn:oid:` references are not checked either.)

Reference-data bundles: Synthea's `hospitalInformation*` / `practitionerInformation*` bundles
hold Organization, Location, Practitioner and PractitionerRole resources and no Patient.
`/v2/ingest` takes one patient's record per request, so they are refused with a 422
`exactly-one-patient` whose detail says that reference-data bundles are not accepted. Patient
bundles may reference that data conditionally (above) without shipping it.

record_id (the ledger's and the events' record id) is, first match wins:
`Bundle.identifier.value`, `Bundle.id`, else a digest of the Patient's `id` (or of the Patient
entry's `fullUrl` without a leading `urn:uuid:`): `patient-` + 32 hex digits of its SHA-256.
The digest matters: in real feeds (and in some Synthea exports) the Patient id *is* the MRN, and
record ids travel in events, message keys and URLs, where PII must not. It must be 1-128
characters (rule `record-id`); `Bundle.identifier.value` and `Bundle.id` are checked whenever
they are present, the Patient fallbacks only when used.

Violations name a JSON path and a rule and carry a fixed, value-free message: never a value from
the payload (a resourceType, a reference, a name), so a 422 body can be logged and shown safely.
Object keys that are not FHIR element names (lowerCamelCase) appear in paths as `*`, since a
malformed payload can carry a value in a key.
At most 50 violations are listed; the count of all of them is exact.
The contract for the same rules is contracts/payloads/fhir-bundle.v2.schema.json; reference
resolution and the record-id fallbacks are beyond JSON Schema and live only here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

BUNDLE_TYPES = ("collection", "batch", "transaction")
REQUEST_TYPES = frozenset({"batch", "transaction"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
URN_UUID = "urn:uuid:"
RECORD_ID_MAX_CHARS = 128
MAX_LISTED_VIOLATIONS = 50

REFERENCE_DATA_NOT_ACCEPTED = (
    "the bundle holds no Patient: /v2/ingest takes exactly one patient's bundle per request; "
    "reference-data bundles (hospitalInformation/practitionerInformation: Organization, "
    "Location, Practitioner, PractitionerRole without a Patient) are not accepted"
)


@dataclass(frozen=True)
class Violation:
    path: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "rule": self.rule, "message": self.message}


@dataclass
class BundleCheck:
    """The outcome: `ok`, the derived `record_id`, and the (capped) violations."""

    violations: list[Violation] = field(default_factory=list)
    total_violations: int = 0
    bundle_type: str | None = None
    entry_count: int = 0
    patient_count: int = 0
    record_id: str | None = None
    record_id_source: str | None = None

    @property
    def ok(self) -> bool:
        return self.total_violations == 0

    def add(self, path: str, rule: str, message: str) -> None:
        self.total_violations += 1
        if len(self.violations) < MAX_LISTED_VIOLATIONS:
            self.violations.append(Violation(path, rule, message))

    def errors(self) -> list[dict[str, str]]:
        return [v.as_dict() for v in self.violations]

    def detail(self) -> str:
        """One value-free sentence for the problem's `detail`; the patient rule comes first."""
        if self.ok:
            return "the bundle is acceptable"
        lead = next((v for v in self.violations if v.rule == "exactly-one-patient"), self.violations[0])
        if self.total_violations == 1:
            return lead.message
        shown = len(self.violations)
        listed = "" if self.total_violations <= shown else f", first {shown} listed"
        return f"{lead.message} ({self.total_violations} violations in all{listed}; see errors)"


def check_bundle(document: Any) -> BundleCheck:
    """Check a parsed request body against the /v2/ingest bundle rules (module docstring)."""
    check = BundleCheck()
    if type(document) is not dict:
        check.add("$", "type", "the body must be a JSON object holding a FHIR R4 Bundle")
        return check
    resource_type = document.get("resourceType")
    if resource_type != "Bundle":
        if resource_type is None:
            check.add("$.resourceType", "required", 'resourceType is required and must be "Bundle"')
        else:
            check.add("$.resourceType", "bundle-resource-type",
                      'resourceType must be "Bundle": POST one FHIR R4 Bundle, not a bare resource')
        return check

    bundle_type = document.get("type")
    if bundle_type is None:
        check.add("$.type", "required", "type is required: collection, batch or transaction")
    elif type(bundle_type) is not str or bundle_type not in BUNDLE_TYPES:
        check.add("$.type", "bundle-type", "type must be collection, batch or transaction")
    else:
        check.bundle_type = bundle_type
    _check_bundle_identity(document, check)

    entries = document.get("entry")
    if entries is None:
        check.add("$.entry", "required", "entry is required: a list holding one Patient and its data")
        return check
    if type(entries) is not list:
        check.add("$.entry", "type", "entry must be an array of objects")
        return check
    check.entry_count = len(entries)

    needs_request = bundle_type in REQUEST_TYPES
    resources: list[tuple[int, dict]] = []
    full_urls: set[str] = set()
    patients: list[int] = []
    for index, entry in enumerate(entries):
        path = f"$.entry[{index}]"
        if type(entry) is not dict:
            check.add(path, "type", "each entry must be an object")
            continue
        full_url = entry.get("fullUrl")
        if full_url is not None:
            if type(full_url) is str:
                full_urls.add(full_url)
            else:
                check.add(f"{path}.fullUrl", "type", "fullUrl must be a string")
        resource = entry.get("resource")
        if resource is None:
            check.add(f"{path}.resource", "required", "each entry needs a resource object")
        elif type(resource) is not dict:
            check.add(f"{path}.resource", "type", "resource must be an object")
        else:
            entry_type = resource.get("resourceType")
            if entry_type is None:
                check.add(f"{path}.resource.resourceType", "required", "each resource needs a resourceType")
            elif type(entry_type) is not str:
                check.add(f"{path}.resource.resourceType", "type", "resourceType must be a string")
            elif not entry_type:
                check.add(f"{path}.resource.resourceType", "min-length", "resourceType must not be empty")
            elif entry_type == "Patient":
                patients.append(index)
            resources.append((index, resource))
        if needs_request:
            _check_request(entry.get("request"), path, check)

    check.patient_count = len(patients)
    if not patients:
        check.add("$.entry", "exactly-one-patient", REFERENCE_DATA_NOT_ACCEPTED)
    elif len(patients) > 1:
        check.add("$.entry", "exactly-one-patient",
                  f"the bundle holds {len(patients)} Patient entries: /v2/ingest takes exactly one "
                  "patient's bundle per request; post one bundle per patient")
    elif check.record_id is None:
        _record_id_from_patient(entries[patients[0]], patients[0], check)

    _check_urn_uuid_references(resources, full_urls, check)
    return check


def _check_bundle_identity(document: dict, check: BundleCheck) -> None:
    """Bundle.identifier.value, then Bundle.id: the record id when present (checked if present)."""
    identifier = document.get("identifier")
    if identifier is not None:
        if type(identifier) is not dict:
            check.add("$.identifier", "type", "identifier must be an object (a FHIR Identifier)")
        else:
            value = identifier.get("value")
            if value is not None and _record_id_ok("$.identifier.value", value, check):
                check.record_id, check.record_id_source = value, "Bundle.identifier.value"
    bundle_id = document.get("id")
    if bundle_id is not None and _record_id_ok("$.id", bundle_id, check) and check.record_id is None:
        check.record_id, check.record_id_source = bundle_id, "Bundle.id"


def _record_id_from_patient(entry: dict, index: int, check: BundleCheck) -> None:
    patient_id = entry["resource"].get("id")
    if patient_id is not None:
        if _record_id_ok(f"$.entry[{index}].resource.id", patient_id, check):
            check.record_id, check.record_id_source = patient_record_id(patient_id), "Patient.id"
        return
    full_url = entry.get("fullUrl")
    if type(full_url) is str and full_url:
        candidate = full_url.removeprefix(URN_UUID)
        if _record_id_ok(f"$.entry[{index}].fullUrl", candidate, check):
            check.record_id, check.record_id_source = patient_record_id(candidate), "Patient fullUrl"
        return
    check.add("$", "record-id",
              "no record id: set Bundle.identifier.value or Bundle.id, or give the Patient an id "
              "or a fullUrl")


def patient_record_id(patient_identity: str) -> str:
    """A stable record id that does not carry the Patient id (often the MRN) itself."""
    return "patient-" + hashlib.sha256(patient_identity.encode()).hexdigest()[:32]


def _record_id_ok(path: str, value: Any, check: BundleCheck) -> bool:
    if type(value) is not str:
        check.add(path, "type", "must be a string (it is used as the record id)")
        return False
    if not value or len(value) > RECORD_ID_MAX_CHARS:
        check.add(path, "record-id",
                  f"must be 1-{RECORD_ID_MAX_CHARS} characters (it is used as the record id)")
        return False
    return True


def _check_request(request: Any, path: str, check: BundleCheck) -> None:
    if request is None:
        check.add(f"{path}.request", "required", "batch and transaction entries need a request")
        return
    if type(request) is not dict:
        check.add(f"{path}.request", "type", "request must be an object")
        return
    method = request.get("method")
    if method is None:
        check.add(f"{path}.request.method", "required", "request.method is required")
    elif type(method) is not str or method not in HTTP_METHODS:
        check.add(f"{path}.request.method", "request-method",
                  "request.method must be GET, HEAD, POST, PUT, DELETE or PATCH")
    url = request.get("url")
    if url is None:
        check.add(f"{path}.request.url", "required", "request.url is required")
    elif type(url) is not str:
        check.add(f"{path}.request.url", "type", "request.url must be a string")
    elif not url:
        check.add(f"{path}.request.url", "min-length", "request.url must not be empty")


_DANGLING = "a urn:uuid: reference must match the fullUrl of an entry in this bundle"


def _check_urn_uuid_references(resources: list[tuple[int, dict]], full_urls: set[str],
                               check: BundleCheck) -> None:
    """Fast pass without paths; an entry with a dangling reference is walked again for paths."""
    for index, resource in resources:
        if _has_dangling(resource, full_urls):
            for path in _dangling_paths(resource, full_urls, f"$.entry[{index}].resource"):
                check.add(path, "reference-resolves", _DANGLING)


def _has_dangling(resource: dict, full_urls: set[str]) -> bool:
    """Iterative walk over every dict and list below `resource`; the hot loop of this module."""
    dict_, list_, str_ = dict, list, str
    stack: list[Any] = [resource]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        node = pop()
        cls = node.__class__
        if cls is dict_:
            ref = node.get("reference")
            if (ref is not None and ref.__class__ is str_ and ref.startswith(URN_UUID)
                    and ref not in full_urls):
                return True
            for value in node.values():
                vcls = value.__class__
                if vcls is dict_:
                    push(value)
                elif vcls is list_:
                    extend(value)
        elif cls is list_:
            extend(node)
    return False


def _dangling_paths(resource: dict, full_urls: set[str], base: str) -> list[str]:
    """The JSON paths of dangling urn:uuid references, in document order (slow path)."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(base, resource)]
    while stack:
        path, node = stack.pop()
        if type(node) is dict:
            children = []
            for key, value in node.items():
                if key == "reference" and type(value) is str:
                    if value.startswith(URN_UUID) and value not in full_urls:
                        found.append(f"{path}.reference")
                elif type(value) in (dict, list):
                    children.append((f"{path}.{_path_key(key)}", value))
            stack.extend(reversed(children))
        elif type(node) is list:
            stack.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(node)
                                   if type(item) in (dict, list)]))
    return found


# FHIR JSON element names: lowerCamelCase, optionally `_`-prefixed (primitive extensions).
_ELEMENT_NAME = re.compile(r"^_?[a-z][A-Za-z0-9]{0,63}$")


def _path_key(key: str) -> str:
    """A FHIR element name as is; any other key (a name, a number: it could be a value) is `*`."""
    return key if _ELEMENT_NAME.match(key) else "*"
