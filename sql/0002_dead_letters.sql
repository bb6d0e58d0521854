-- txbox migration 0002: dead letters.
-- A row that failed permanently, or transiently more than the relay's
-- max attempts, moves here in the same transaction that removes it from the
-- outbox. Nothing is ever dropped: inspect with plain SQL or
-- `txbox dead-letters list|show`, put back with `txbox dead-letters replay`.

CREATE TABLE IF NOT EXISTS txbox.dead_letters (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id     bigint      NOT NULL,      -- id the row had in txbox.outbox
    message_id    uuid        NOT NULL,
    destination   text        NOT NULL,
    message_key   text,
    payload       bytea       NOT NULL,
    headers       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL,      -- when the service enqueued it
    attempts      integer     NOT NULL,      -- publish attempts made
    error_class   text        NOT NULL CHECK (error_class IN ('permanent', 'transient')),
    last_error    text        NOT NULL,
    dead_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS dead_letters_dead_at ON txbox.dead_letters (dead_at);
CREATE INDEX IF NOT EXISTS dead_letters_message_id ON txbox.dead_letters (message_id);

INSERT INTO txbox.schema_version (version, name) VALUES (2, 'dead_letters') ON CONFLICT (version) DO NOTHING;
