-- Pipeline internals (schema exchange) and the published, de-identified tables (schema canonical).

-- What one sensor tick handed to one run: identifiers and hashes only. The run key is the id.
CREATE TABLE exchange.pipeline_batches (
    batch_id        text PRIMARY KEY,
    partition_date  date NOT NULL,
    bus_range       text NOT NULL,
    events          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per ingested submission (event) that the tokenizer de-identified.
CREATE TABLE exchange.tokenized_records (
    event_id        uuid PRIMARY KEY,
    partner_id      text NOT NULL,
    record_id       text NOT NULL,
    object_key      text NOT NULL,
    sha256          text NOT NULL,
    correlation_id  text NOT NULL,
    payload_version smallint NOT NULL,
    received_at     timestamptz NOT NULL,
    partition_date  date NOT NULL,
    token_key_id    text NOT NULL,
    deidentified    jsonb NOT NULL,   -- tokens + clinical part; no PII by construction
    tokenized_at    timestamptz NOT NULL DEFAULT now(),
    canonical_at    timestamptz,
    dagster_run_id  text
);
CREATE INDEX tokenized_records_partition ON exchange.tokenized_records (partition_date);

-- Permanent faults: the record is parked with a reason code; its batch goes on.
CREATE TABLE exchange.dead_letter_records (
    event_id        uuid PRIMARY KEY,
    partner_id      text NOT NULL,
    record_id       text NOT NULL,
    object_key      text NOT NULL,
    sha256          text NOT NULL,
    received_at     timestamptz NOT NULL,
    partition_date  date NOT NULL,
    reason_code     text NOT NULL,
    detail          text NOT NULL,   -- value-free description
    attempts        integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    dagster_run_id  text
);
CREATE INDEX dead_letter_records_open ON exchange.dead_letter_records (partition_date) WHERE resolved_at IS NULL;

-- The pipeline's progress, as the ingest API may read it (its only window into this schema).
CREATE VIEW exchange.record_progress AS
    SELECT event_id, 'tokenized'::text AS status, tokenized_at AS at, NULL::text AS reason
      FROM exchange.tokenized_records
    UNION ALL
    SELECT event_id, 'canonical', canonical_at, NULL
      FROM exchange.tokenized_records WHERE canonical_at IS NOT NULL
    UNION ALL
    SELECT event_id, 'dead_lettered', last_failed_at, reason_code
      FROM exchange.dead_letter_records WHERE resolved_at IS NULL;

CREATE SCHEMA IF NOT EXISTS canonical;

-- v1 canonical model. Every row: schema_version, partner_id, source event_id and object_key.
CREATE TABLE canonical.persons (
    partner_id      text NOT NULL,
    record_id       text NOT NULL,
    token_t1        text NOT NULL,
    token_t2        text NOT NULL,
    token_t3        text NOT NULL,
    token_t4        text NOT NULL,
    token_t5        text NOT NULL,
    token_key_id    text NOT NULL,
    birth_year      smallint,
    postal_code3    text,
    sex             text,
    schema_version  smallint NOT NULL,
    event_id        uuid NOT NULL,
    object_key      text NOT NULL,
    received_at     timestamptz NOT NULL,
    partition_date  date NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, record_id)
);
CREATE INDEX persons_partition ON canonical.persons (partition_date);

CREATE TABLE canonical.encounters (
    partner_id      text NOT NULL,
    encounter_id    text NOT NULL,
    record_id       text NOT NULL,
    class           text,
    start_at        timestamptz,
    end_at          timestamptz,
    diagnoses       jsonb NOT NULL DEFAULT '[]'::jsonb,
    observations    jsonb NOT NULL DEFAULT '[]'::jsonb,
    schema_version  smallint NOT NULL,
    event_id        uuid NOT NULL,
    object_key      text NOT NULL,
    received_at     timestamptz NOT NULL,
    partition_date  date NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, encounter_id)
);
CREATE INDEX encounters_partition ON canonical.encounters (partition_date);
