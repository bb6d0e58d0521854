-- txbox migration 0003: what the second relay core needs.
-- Apply in order with `txbox migrate --database-url URL`, or
-- `psql -v ON_ERROR_STOP=1 --single-transaction -f sql/0003_relay_wakeups.sql`.
-- Safe to apply twice.

-- When a row first failed: with `attempts`, the retry budget of a row is a
-- count and a time (txbox-relay --max-attempts and --max-retry-age).
ALTER TABLE txbox.outbox ADD COLUMN IF NOT EXISTS first_failed_at timestamptz;

-- Rows are found by (lane, id) only (outbox_lane_id): the relay claims a
-- lane's rows in id order and deletes them by lane and id. The primary key
-- on id alone cost every writer a second index insert, on the hottest page
-- of the table, and let the planner scan it for a lane's rows in id order
-- (all of the table for a lane with few rows). Ids stay unique: they come
-- from the identity column.
ALTER TABLE txbox.outbox DROP CONSTRAINT IF EXISTS outbox_pkey;

-- Rows waiting for a retry, in one partial index (empty while nothing
-- fails, so writers never maintain it, and one index less for them to open):
-- the claim finds a key's earlier waiting row by (lane, message_key, id),
-- and a relay with nothing due sleeps until the earliest next_attempt_at of
-- its lanes instead of polling.
CREATE INDEX IF NOT EXISTS outbox_waiting ON txbox.outbox (lane, message_key, id) INCLUDE (next_attempt_at)
    WHERE attempts > 0;
DROP INDEX IF EXISTS txbox.outbox_retrying;

-- A row dead-lettered after exhausting its retry budget during a partial
-- broker outage keeps the class it failed with.
ALTER TABLE txbox.dead_letters DROP CONSTRAINT IF EXISTS dead_letters_error_class_check;
ALTER TABLE txbox.dead_letters ADD CONSTRAINT dead_letters_error_class_check
    CHECK (error_class IN ('permanent', 'transient', 'outage'));

-- Wake-ups. While a relay process has an idle worker it LISTENs on the
-- channel txbox_outbox and keeps this sequence at "now + a few seconds"
-- (epoch seconds); a writer's INSERT into the outbox notifies that channel
-- only while the sequence is ahead of its transaction's start. Under load no
-- relay idles, nobody refreshes it, and writers pay no NOTIFY (NOTIFY
-- serialises committing transactions). A sequence, not a table: setval is
-- seen by everyone at once, and reading it is a function call where a table
-- lookup would run a query for every writing statement. A relay that dies
-- simply stops refreshing it.
CREATE SEQUENCE IF NOT EXISTS txbox.relay_wakeup_until MINVALUE 0 START WITH 0;
-- Writers read it, relays set it.
GRANT SELECT ON SEQUENCE txbox.relay_wakeup_until TO PUBLIC;

-- Runs as the writer, with every name qualified: a SECURITY DEFINER function
-- with its own search_path would cost every writing statement a GUC save and
-- restore, several times what the check itself costs.
CREATE OR REPLACE FUNCTION txbox.notify_relays() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF pg_catalog.pg_sequence_last_value('txbox.relay_wakeup_until'::regclass)
       > extract(epoch FROM pg_catalog.now()) THEN
    PERFORM pg_catalog.pg_notify('txbox_outbox', '');
  END IF;
  RETURN NULL;
END
$$;

-- One check per INSERT statement (not per row); identical notifications of
-- one transaction are folded by PostgreSQL. Switch it off with
-- `ALTER TABLE txbox.outbox DISABLE TRIGGER outbox_wakeup` (relays then find
-- new rows by polling, --poll-interval).
DROP TRIGGER IF EXISTS outbox_wakeup ON txbox.outbox;
CREATE TRIGGER outbox_wakeup AFTER INSERT ON txbox.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION txbox.notify_relays();

INSERT INTO txbox.schema_version (version, name) VALUES (3, 'relay_wakeups') ON CONFLICT (version) DO NOTHING;
