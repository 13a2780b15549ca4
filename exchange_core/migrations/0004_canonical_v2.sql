-- Canonical v2 (expand step of expand/contract): a normalized model for FHIR R4 and upcast v1.
--   persons      unchanged columns; rows move to schema_version 2 when re-derived
--   encounters   one row per encounter; the v1 jsonb columns diagnoses/observations become
--                nullable and are left NULL by v2 writers (their content moves to:)
--   conditions   one row per condition (v1 diagnosis or FHIR Condition)
--   observations one row per observation, value as number or text, with unit and time
-- v1 readers switch to the canonical_v1 views, which answer v1-era queries with the rows they
-- returned before, whichever version a partition is at (so they work during the backfill too).
-- The contract step (dropping encounters.diagnoses/observations) is a later migration, after
-- every partition is at v2.

ALTER TABLE canonical.encounters ALTER COLUMN diagnoses DROP NOT NULL;
ALTER TABLE canonical.encounters ALTER COLUMN diagnoses DROP DEFAULT;
ALTER TABLE canonical.encounters ALTER COLUMN observations DROP NOT NULL;
ALTER TABLE canonical.encounters ALTER COLUMN observations DROP DEFAULT;

CREATE TABLE canonical.conditions (
    partner_id      text NOT NULL,
    condition_id    text NOT NULL,
    record_id       text NOT NULL,
    encounter_id    text,
    ordinal         integer NOT NULL,
    system          text,
    code            text,
    display         text,
    onset_at        timestamptz,
    schema_version  smallint NOT NULL,
    event_id        uuid NOT NULL,
    object_key      text NOT NULL,
    received_at     timestamptz NOT NULL,
    partition_date  date NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, condition_id)
);
CREATE INDEX conditions_partition ON canonical.conditions (partition_date);
CREATE INDEX conditions_encounter ON canonical.conditions (partner_id, encounter_id);
CREATE INDEX conditions_record ON canonical.conditions (partner_id, record_id);

CREATE TABLE canonical.observations (
    partner_id      text NOT NULL,
    observation_id  text NOT NULL,
    record_id       text NOT NULL,
    encounter_id    text,
    ordinal         integer NOT NULL,
    system          text,
    code            text,
    value_num       double precision,
    value_text      text,
    unit            text,
    effective_at    timestamptz,
    schema_version  smallint NOT NULL,
    event_id        uuid NOT NULL,
    object_key      text NOT NULL,
    received_at     timestamptz NOT NULL,
    partition_date  date NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, observation_id)
);
CREATE INDEX observations_partition ON canonical.observations (partition_date);
CREATE INDEX observations_encounter ON canonical.observations (partner_id, encounter_id);
CREATE INDEX observations_record ON canonical.observations (partner_id, record_id);

-- v1 compatibility views. Their rows are v1-shaped, so they say schema_version 1.
CREATE SCHEMA IF NOT EXISTS canonical_v1;

CREATE VIEW canonical_v1.persons AS
    SELECT partner_id, record_id, token_t1, token_t2, token_t3, token_t4, token_t5, token_key_id,
           birth_year, postal_code3, sex, 1::smallint AS schema_version, event_id, object_key,
           received_at, partition_date, updated_at
      FROM canonical.persons;

-- Timestamps inside the v1 jsonb use the canonical text form the v1 writer used.
CREATE FUNCTION canonical_v1.iso_utc(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE AS
    $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE VIEW canonical_v1.encounters AS
    SELECT e.partner_id, e.encounter_id, e.record_id, e.class, e.start_at, e.end_at,
           CASE WHEN e.schema_version = 1 THEN e.diagnoses ELSE coalesce((
               SELECT jsonb_agg(jsonb_build_object('system', c.system, 'code', c.code,
                                                   'display', c.display) ORDER BY c.ordinal)
                 FROM canonical.conditions c
                WHERE c.partner_id = e.partner_id AND c.encounter_id = e.encounter_id
                  AND c.record_id = e.record_id), '[]'::jsonb) END AS diagnoses,
           CASE WHEN e.schema_version = 1 THEN e.observations ELSE coalesce((
               SELECT jsonb_agg(jsonb_build_object('system', o.system, 'code', o.code,
                                                   'value_num', o.value_num, 'value_text', o.value_text,
                                                   'unit', o.unit,
                                                   'effective', canonical_v1.iso_utc(o.effective_at))
                                ORDER BY o.ordinal)
                 FROM canonical.observations o
                WHERE o.partner_id = e.partner_id AND o.encounter_id = e.encounter_id
                  AND o.record_id = e.record_id), '[]'::jsonb) END AS observations,
           1::smallint AS schema_version, e.event_id, e.object_key, e.received_at,
           e.partition_date, e.updated_at
      FROM canonical.encounters e;

-- Re-derivation deletes a record's superseded encounters by (partner_id, record_id).
CREATE INDEX encounters_record ON canonical.encounters (partner_id, record_id);
