-- Ingest API state. Owned by ingest_api; no other service writes here except the outbox relay,
-- which only marks outbox rows and ledger rows as published.
CREATE SCHEMA IF NOT EXISTS ingest;

CREATE TABLE ingest.partners (
    partner_id    text PRIMARY KEY CHECK (partner_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name  text NOT NULL,
    -- SHA-256 of the full API key; keys carry 256 bits of entropy, so a fast hash suffices.
    api_key_hash  bytea NOT NULL UNIQUE,
    key_prefix    text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per (partner, key). It is inserted, with the stored response, in the same transaction
-- as the ledger/outbox/audit rows, so a key is either fully done or absent: a crashed request
-- leaves nothing to unwedge. A concurrent twin blocks on the unique index until the first commits.
CREATE TABLE ingest.idempotency_keys (
    partner_id        text NOT NULL REFERENCES ingest.partners (partner_id),
    idempotency_key   text NOT NULL,
    request_method    text NOT NULL,
    request_path      text NOT NULL,
    fingerprint       bytea NOT NULL,
    response_status   smallint NOT NULL,
    response_body     jsonb NOT NULL,
    ingest_id         uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, idempotency_key)
);

-- The ledger: every accepted record, with where its raw bytes are and how far it has got.
CREATE TABLE ingest.ingested_records (
    ingest_id       uuid PRIMARY KEY,
    partner_id      text NOT NULL REFERENCES ingest.partners (partner_id),
    record_id       text NOT NULL,
    schema_version  smallint NOT NULL,
    object_key      text NOT NULL UNIQUE,
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes      integer NOT NULL CHECK (size_bytes >= 0),
    content_type    text NOT NULL,
    event_id        uuid NOT NULL UNIQUE,
    correlation_id  text NOT NULL,
    received_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'accepted'
                    CHECK (status IN ('accepted', 'published')),
    published_at    timestamptz
);
CREATE INDEX ingested_records_partner_record ON ingest.ingested_records (partner_id, record_id, received_at DESC);
CREATE INDEX ingested_records_received ON ingest.ingested_records (received_at);

-- Transactional outbox: written with the ledger row, published by `exchange relay`.
CREATE TABLE ingest.outbox_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    event_type    text NOT NULL,
    topic         text NOT NULL,
    message_key   text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
-- The relay's claim query walks only unpublished rows in id order.
CREATE INDEX outbox_events_unpublished ON ingest.outbox_events (id) WHERE published_at IS NULL;

CREATE TABLE ingest.audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    partner_id      text NOT NULL,
    action          text NOT NULL,
    ingest_id       uuid,
    correlation_id  text NOT NULL,
    -- Identifiers and hashes only, never payload values.
    details         jsonb NOT NULL DEFAULT '{}'::jsonb
);
