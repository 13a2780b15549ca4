"""De-identification of HL7 FHIR R4 bundles (payload v2): tokens plus the clinical rows, no PII.

Output shape (consumed by `exchange_assets.lib.canonical.rows_for_record`; keep the names)::

    {"schema_version": 2, "source_format": "fhir-r4-bundle",
     "person": {"tokens": {"T1".."T5"}, "key_id", "birth_year", "postal_code3", "sex"},
     "encounters":   [{"encounter_id", "class", "start", "end"}],
     "conditions":   [{"condition_id", "encounter_id", "system", "code", "display", "onset"}],
     "observations": [{"observation_id", "encounter_id", "system", "code", "value_num",
                       "value_text", "unit", "effective"}]}

Every Encounter, Condition and Observation entry of the bundle gives exactly one row, in entry
order (an Observation without a value[x], e.g. a panel with `component`, gives a row whose
value is null). Every row is built field by field from an allow-list; nothing is copied whole.

The Patient contributes only what OpenToken needs, read the way the shared vectors read it
(`fhir-as-is` rows of ``shared/data/opentoken-vectors``):

- first / last name: ``name[use=official].given[0]`` / ``.family`` (no official name: the first
  ``usual`` or use-less name; ``maiden``, ``old``, ``nickname``... names are never used);
- birth date ``birthDate``, sex ``gender``, postal code ``address[0].postalCode``;
- SSN: the first identifier whose ``type.coding`` has code ``SS``, else the first identifier
  with system ``http://hl7.org/fhir/sid/us-ssn``.

and from those only the tokens, the birth YEAR, the ZIP3/FSA and the sex (male/female) leave
this module. The Patient's narrative, telecom, address lines and city, other identifiers (MRN,
driver's licence, passport), other names, extensions (mother's maiden name, birthplace),
communication and marital status are never read. Of the other resources only ids, codes (with
their code-system ``display``), dates and values are read: no ``text`` narrative, no
``subject``/``participant``/``performer`` Reference and none of a Reference's ``display``.

Ids: the resource ``id``, else the entry ``fullUrl`` without ``urn:uuid:``, else (neither is
present) ``<record_id>/<resourceType>/<entry index>``, record_id being the bundle's record id as
`ingest_api.fhir_validation.check_bundle` derives it (PII-free), so an id is always present and
unique within the partner's records. An encounter reference resolves to the id of the Encounter
entry it names (by ``fullUrl``, or ``Encounter/<id>``); a reference to an encounter outside the
bundle resolves ``urn:uuid:X`` and ``[base/]Encounter/X[/_history/n]`` to ``X``; anything else
(conditional, contained, missing) is null.

Malformed or missing attributes give nulls and blank tokens, never an exception: the bundle is
assumed to have passed `check_bundle` (the dispatch in `tokenizer.deidentify` does that), but
nothing below relies on more than "it is a dict".

Performance: one pass over the entries, no copies of resources, type checks with ``type() is``.
"""

from __future__ import annotations

from typing import Any

from tokenizer.deidentify import KeySource, birth_year, postal_code3, sex_category
from tokenizer.models import MAX_ATTRIBUTE_CHARS
from tokenizer.opentoken import PersonAttributes, tokenize

OUTPUT_SCHEMA_VERSION = 2
SOURCE_FORMAT = "fhir-r4-bundle"
URN_UUID = "urn:uuid:"
US_SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
SSN_TYPE_CODE = "SS"

_str = str
_dict = dict
_list = list


def deidentify_fhir_bundle(
    bundle: dict[str, Any], key_ring: KeySource, record_id: str | None = None,
) -> dict[str, Any]:
    """De-identify one FHIR R4 bundle (already checked by `check_bundle`). Pure: no I/O.

    `record_id` is the bundle's record id (`BundleCheck.record_id`); it is only used to name
    resources that have neither an id nor a fullUrl, and derived here if needed and not given.
    """
    patient: dict | None = None
    encounters: list[dict[str, Any]] = []
    conditions: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    # fullUrl / "Encounter/<id>" of every Encounter entry -> its output encounter_id.
    encounter_ids: dict[str, str] = {}
    # Rows whose "encounter_id" still holds the raw reference string, resolved after the pass.
    unresolved: list[dict[str, Any]] = []
    fallback_ids: list[tuple[dict[str, Any], str, str, int]] = []

    entries = bundle.get("entry") if type(bundle) is _dict else None
    if type(entries) is not _list:
        entries = ()
    for index, entry in enumerate(entries):
        if type(entry) is not _dict:
            continue
        resource = entry.get("resource")
        if type(resource) is not _dict:
            continue
        resource_type = resource.get("resourceType")
        if resource_type == "Observation":
            row = _observation(resource)
            observations.append(row)
        elif resource_type == "Encounter":
            row = _encounter(resource)
            encounters.append(row)
        elif resource_type == "Condition":
            row = _condition(resource)
            conditions.append(row)
        elif resource_type == "Patient":
            if patient is None:
                patient = resource
            continue
        else:
            continue

        # The row's own id: resource id, else the entry's fullUrl without urn:uuid:.
        full_url = entry.get("fullUrl")
        if type(full_url) is not _str or not full_url:
            full_url = None
        rid = resource.get("id")
        if type(rid) is not _str or not rid:
            rid = None
            if full_url is not None:
                rid = full_url[9:] if full_url.startswith(URN_UUID) else full_url
                rid = rid or None
        id_key = _ID_KEYS[resource_type]
        row[id_key] = rid
        if rid is None:
            fallback_ids.append((row, id_key, resource_type, index))
        if resource_type == "Encounter":
            if rid is not None:
                if full_url is not None:
                    encounter_ids[full_url] = rid
                own_id = resource.get("id")
                if type(own_id) is _str and own_id:
                    encounter_ids["Encounter/" + own_id] = rid
        elif row["encounter_id"] is not None:
            unresolved.append(row)

    if fallback_ids:
        prefix = record_id if record_id else _record_id_of(bundle)
        for row, id_key, resource_type, index in fallback_ids:
            row[id_key] = f"{prefix}/{resource_type}/{index}"
    for row in unresolved:
        row["encounter_id"] = _resolve_encounter(row["encounter_id"], encounter_ids)

    return {
        "schema_version": OUTPUT_SCHEMA_VERSION,
        "source_format": SOURCE_FORMAT,
        "person": _person(patient, key_ring),
        "encounters": encounters,
        "conditions": conditions,
        "observations": observations,
    }


_ID_KEYS = {"Encounter": "encounter_id", "Condition": "condition_id",
            "Observation": "observation_id"}


def _record_id_of(bundle: Any) -> str:
    """The record id `check_bundle` derives; only needed for resources without id or fullUrl."""
    from ingest_api.fhir_validation import check_bundle  # rare path: a full check of the bundle

    return check_bundle(bundle).record_id or "bundle"


# -- Patient ------------------------------------------------------------------------------------


def _person(patient: dict | None, key_ring: KeySource) -> dict[str, Any]:
    if patient is None:
        person = PersonAttributes()
    else:
        name = _token_name(patient.get("name"))
        given = name.get("given") if name is not None else None
        first_name = _attribute(given[0]) if type(given) is _list and given else None
        addresses = patient.get("address")
        address = addresses[0] if type(addresses) is _list and addresses else None
        person = PersonAttributes(
            first_name=first_name,
            last_name=_attribute(name.get("family")) if name is not None else None,
            birth_date=_attribute(patient.get("birthDate")),
            sex=_attribute(patient.get("gender")),
            postal_code=_attribute(address.get("postalCode")) if type(address) is _dict else None,
            ssn=_attribute(_ssn(patient.get("identifier"))),
        )
    return {
        "tokens": tokenize(person, key_ring.hasher),
        "key_id": key_ring.key_id,
        "birth_year": birth_year(person.birth_date),
        "postal_code3": postal_code3(person.postal_code),
        "sex": sex_category(person.sex),
    }


def _attribute(value: Any) -> str | None:
    """A string attribute of bounded length, else None (blank tokens, as for /v1/tokens)."""
    if type(value) is _str and len(value) <= MAX_ATTRIBUTE_CHARS:
        return value
    return None


def _token_name(names: Any) -> dict | None:
    """The official HumanName; else the first usual or use-less one; never maiden/old/nickname."""
    if type(names) is not _list:
        return None
    fallback = None
    for name in names:
        if type(name) is not _dict:
            continue
        use = name.get("use")
        if use == "official":
            return name
        if fallback is None and (use is None or use == "usual"):
            fallback = name
    return fallback


def _ssn(identifiers: Any) -> Any:
    """Value of the identifier typed SS, else of the first with the US SSN system."""
    if type(identifiers) is not _list:
        return None
    by_system = None
    for identifier in identifiers:
        if type(identifier) is not _dict:
            continue
        id_type = identifier.get("type")
        if type(id_type) is _dict:
            codings = id_type.get("coding")
            if type(codings) is _list:
                for coding in codings:
                    if type(coding) is _dict and coding.get("code") == SSN_TYPE_CODE:
                        return identifier.get("value")
        if by_system is None and identifier.get("system") == US_SSN_SYSTEM:
            by_system = identifier
    return by_system.get("value") if by_system is not None else None


# -- clinical rows ------------------------------------------------------------------------------


def _s(value: Any) -> str | None:
    return value if type(value) is _str else None


def _number(value: Any) -> int | float | None:
    cls = type(value)
    return value if cls is int or cls is float else None  # bool is not int here: `type() is`


def _first_coding(concept: Any) -> dict | None:
    if type(concept) is _dict:
        codings = concept.get("coding")
        if type(codings) is _list and codings:
            coding = codings[0]
            if type(coding) is _dict:
                return coding
    return None


def _reference(value: Any) -> str | None:
    if type(value) is _dict:
        ref = value.get("reference")
        if type(ref) is _str and ref:
            return ref
    return None


def _period_start(period: Any) -> str | None:
    return _s(period.get("start")) if type(period) is _dict else None


def _encounter(resource: dict) -> dict[str, Any]:
    encounter_class = resource.get("class")
    if type(encounter_class) is _dict:  # R4: a Coding
        class_code = _s(encounter_class.get("code"))
    elif type(encounter_class) is _list and encounter_class:  # R5 shape: CodeableConcept[]
        first = encounter_class[0]
        coding = _first_coding(first)
        class_code = _s(coding.get("code")) if coding is not None else (
            _s(first.get("code")) if type(first) is _dict else None)
    else:
        class_code = None
    period = resource.get("period")
    if type(period) is _dict:
        start, end = _s(period.get("start")), _s(period.get("end"))
    else:
        start = end = None
    return {"encounter_id": None, "class": class_code, "start": start, "end": end}


def _condition(resource: dict) -> dict[str, Any]:
    coding = _first_coding(resource.get("code"))
    onset = resource.get("onsetDateTime")
    if onset is None:
        onset = _period_start(resource.get("onsetPeriod"))
    return {
        "condition_id": None,
        "encounter_id": _reference(resource.get("encounter")),  # resolved after the pass
        "system": _s(coding.get("system")) if coding is not None else None,
        "code": _s(coding.get("code")) if coding is not None else None,
        "display": _s(coding.get("display")) if coding is not None else None,
        "onset": _s(onset),
    }


def _observation(resource: dict) -> dict[str, Any]:
    coding = _first_coding(resource.get("code"))
    value_num = value_text = unit = None
    get = resource.get
    quantity = get("valueQuantity")
    if quantity is not None:
        if type(quantity) is _dict:
            value_num = _number(quantity.get("value"))
            unit = _s(quantity.get("unit")) or _s(quantity.get("code"))
    elif (concept := get("valueCodeableConcept")) is not None:
        if type(concept) is _dict:
            value_text = _s(concept.get("text"))
            if not value_text:
                first = _first_coding(concept)
                value_text = _s(first.get("display")) if first is not None else None
    elif (text := get("valueString")) is not None:
        value_text = _s(text)
    elif (flag := get("valueBoolean")) is not None:
        value_text = "true" if flag is True else "false" if flag is False else None
    elif (integer := get("valueInteger")) is not None:
        value_num = _number(integer)
    effective = get("effectiveDateTime")
    if effective is None:
        effective = _period_start(get("effectivePeriod"))
        if effective is None:
            effective = get("effectiveInstant")
    return {
        "observation_id": None,
        "encounter_id": _reference(get("encounter")),  # resolved after the pass
        "system": _s(coding.get("system")) if coding is not None else None,
        "code": _s(coding.get("code")) if coding is not None else None,
        "value_num": value_num,
        "value_text": value_text,
        "unit": unit,
        "effective": _s(effective),
    }


def _resolve_encounter(reference: str, encounter_ids: dict[str, str]) -> str | None:
    """An Encounter reference → the encounter_id it names (module docstring), else None."""
    hit = encounter_ids.get(reference)
    if hit is not None:
        return hit
    if reference.startswith(URN_UUID):
        return reference[9:] or None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2] == "Encounter" and parts[-1]:
        return parts[-1]
    return None
