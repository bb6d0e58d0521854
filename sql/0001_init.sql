-- txbox migration 0001: outbox and inbox tables.
-- Apply in order with `psql -v ON_ERROR_STOP=1 --single-transaction -f sql/0001_init.sql`
-- or with `txbox migrate --database-url URL`. Safe to apply twice.

CREATE SCHEMA IF NOT EXISTS txbox;

-- Applied migrations. Each migration file records itself here as its last step.
CREATE TABLE IF NOT EXISTS txbox.schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox. Public contract: a service INSERTs (destination, message_key,
-- payload, headers) in its own transaction; every other column has a default.
CREATE TABLE IF NOT EXISTS txbox.outbox (
    -- Delivery order: per message_key, messages reach the broker in id order.
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid        NOT NULL DEFAULT gen_random_uuid(),
    destination     text        NOT NULL,
    message_key     text,
    payload         bytea       NOT NULL DEFAULT ''::bytea,
    -- A JSON object of string values, sent as broker headers.
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Lane = stable hash of the key (of the message id when there is no key).
    -- One relay worker at a time owns a lane, which keeps per-key order.
    lane            smallint    NOT NULL GENERATED ALWAYS AS
                        ((hashtextextended(coalesce(message_key, message_id::text), 0) & 255)::smallint) STORED,
    -- Retry bookkeeping, visible to ops with plain SQL.
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text
);

CREATE INDEX IF NOT EXISTS outbox_lane_id ON txbox.outbox (lane, id);
-- Rows waiting for a retry block the later rows of their key; this partial
-- index finds them cheaply (it is empty while nothing fails).
CREATE INDEX IF NOT EXISTS outbox_retrying ON txbox.outbox (lane, message_key, id) WHERE attempts > 0;

-- The outbox sees constant insert/delete churn: vacuum it eagerly.
ALTER TABLE txbox.outbox SET (autovacuum_vacuum_scale_factor = 0.01,
                              autovacuum_vacuum_threshold = 1000,
                              autovacuum_vacuum_cost_limit = 2000);

-- The inbox: one row per (consumer, message id) processed. The consumer's
-- writes and this row commit together, so a redelivery is seen as a duplicate.
CREATE TABLE IF NOT EXISTS txbox.inbox (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS inbox_processed_at ON txbox.inbox (processed_at);

INSERT INTO txbox.schema_version (version, name) VALUES (1, 'init') ON CONFLICT (version) DO NOTHING;
