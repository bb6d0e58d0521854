-- txbox migration 0004: the inbox is claimed through one function.
-- Apply in order with `txbox migrate --database-url URL`, or
-- `psql -v ON_ERROR_STOP=1 --single-transaction -f sql/0004_inbox_claim.sql`.
-- Safe to apply twice.

-- txbox.inbox_claim(consumer, ids) records, for `consumer`, every id of
-- `ids` not recorded yet and returns those ids (each once): the ids to
-- process. An id being claimed by a concurrent transaction is waited for,
-- then returned only if that transaction rolled back. Every consumer, txbox's
-- own and plain-SQL ones in other languages, claims through this function,
-- so the inbox's layout can change on the server without them knowing:
-- `txbox inbox partition` replaces it with a version for the time-partitioned
-- inbox (docs/inbox.md).
--
-- This is the version for the plain table: its primary key finds the
-- duplicates, and ON CONFLICT waits for a concurrent insert of the same id.
-- PL/pgSQL rather than SQL: a PL/pgSQL function keeps its plan for the
-- session, an SQL function with an INSERT is planned again at every call.
--
-- Created only while the inbox is a plain table: applied again (psql -f) to
-- a partitioned inbox, this file must not put back a version that cannot
-- find duplicates across partitions.
DO $migration$
BEGIN
  IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = 'txbox.inbox'::regclass) = 'r' THEN
    CREATE OR REPLACE FUNCTION txbox.inbox_claim(consumer text, ids text[]) RETURNS SETOF text
    LANGUAGE plpgsql AS $claim$
    BEGIN
      RETURN QUERY
        INSERT INTO txbox.inbox AS claimed (consumer, message_id)
        SELECT $1, id FROM pg_catalog.unnest($2) AS id
        ON CONFLICT DO NOTHING
        RETURNING claimed.message_id;
    END
    $claim$;
  END IF;
END
$migration$;

INSERT INTO txbox.schema_version (version, name) VALUES (4, 'inbox_claim') ON CONFLICT (version) DO NOTHING;
