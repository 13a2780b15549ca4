-- The embedded event bus: an append-only log with gapless offsets.
-- Offsets are assigned by the relay while it holds a transaction-scoped advisory lock, so
-- appends commit in offset order and a reader may safely ask for `log_offset > cursor`.
-- (Reading the outbox by `id > cursor` would skip rows: identity values commit out of order.)
CREATE SCHEMA IF NOT EXISTS exchange;

CREATE TABLE exchange.event_log (
    log_offset   bigint PRIMARY KEY CHECK (log_offset > 0),
    event_id     uuid NOT NULL,
    topic        text NOT NULL,
    message_key  text NOT NULL,
    payload      jsonb NOT NULL,
    appended_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, event_id)
);
