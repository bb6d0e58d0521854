#include "txbox/outbox/inbox_partitions.hpp"

#include <fmt/format.h>

#include <pqxx/pqxx>

#include "txbox/core/error.hpp"
#include "txbox/outbox/schema.hpp"

namespace txbox::outbox {
namespace {

// Partitions start at multiples of the interval from this instant, so daily
// partitions cover UTC days.
constexpr const char* kOrigin = "timestamptz '2000-01-01 00:00:00+00'";

// The claim of the partitioned inbox. A unique index of a partitioned table
// must contain the partition key, so no index can keep (consumer,
// message_id) unique across partitions. Instead every claimer of an id takes
// a transaction advisory lock on a hash of (consumer, id) before looking for
// it in every partition: a second claimer waits until the first commits or
// rolls back, and its lookup, a later statement with a later snapshot (READ
// COMMITTED), then sees the first one's row. Locks in key order, so two
// batches sharing ids cannot deadlock on each other.
//
// The keys are the single-bigint form of advisory locks, which never meets
// the relay's two-key locks (PostgreSQL keeps the forms apart); it could meet
// txbox's migration lock ("txbox" + 1) only by a 64-bit hash collision, and
// then merely waits for a migration. Each distinct id holds one lock until
// the commit: a batch of N ids needs N entries of the server's lock table
// (max_locks_per_transaction x max_connections entries shared by all
// sessions, 6,400 by default).
//
// REPEATABLE READ is refused: its snapshot is taken before the lock is, so
// the lookup could miss a row committed meanwhile (the unique index that
// catches that in the plain table does not span partitions). SERIALIZABLE
// is safe: both claimers read each other's index ranges, which SSI detects.
// Each partition keeps its own primary key on (consumer, message_id), which
// catches a duplicate within one partition even then.
constexpr const char* kPartitionedClaimSql = R"sql(
CREATE OR REPLACE FUNCTION txbox.inbox_claim(consumer text, ids text[]) RETURNS SETOF text
LANGUAGE plpgsql AS $claim$
BEGIN
  IF pg_catalog.current_setting('transaction_isolation') = 'repeatable read' THEN
    RAISE EXCEPTION 'txbox.inbox_claim: a partitioned inbox cannot be claimed in a REPEATABLE READ transaction'
      USING ERRCODE = 'feature_not_supported',
            HINT = 'claim in a READ COMMITTED (the default) or SERIALIZABLE transaction';
  END IF;
  PERFORM pg_catalog.pg_advisory_xact_lock(key)
     FROM (SELECT DISTINCT pg_catalog.hashtextextended(id, pg_catalog.hashtext($1)) AS key
             FROM pg_catalog.unnest($2) AS id ORDER BY 1) AS keys;
  RETURN QUERY
    INSERT INTO txbox.inbox AS claimed (consumer, message_id)
    SELECT DISTINCT $1, id FROM pg_catalog.unnest($2) AS id
     WHERE NOT EXISTS (SELECT FROM txbox.inbox AS recorded
                        WHERE recorded.consumer = $1 AND recorded.message_id = id)
    ON CONFLICT DO NOTHING
    RETURNING claimed.message_id;
END
$claim$;
)sql";

constexpr const char* kIntervalHint =
    "give a PostgreSQL interval of whole seconds or more without months or years, such as '1 day', "
    "'6 hours' or '7 days'";

constexpr int kLockTimeoutSeconds = 10;

struct Settings {
  std::string interval, retention;
};

// `text` as PostgreSQL prints the interval, or a UsageError naming `flag`.
std::string canonical_interval(pqxx::connection_base& conn, const std::string& flag, const std::string& text) {
  pqxx::nontransaction tx(conn);
  try {
    return tx.exec_params1("SELECT $1::interval::text", text)[0].as<std::string>();
  } catch (const pqxx::data_exception&) {
    throw txbox::UsageError(fmt::format("{} '{}' is not a PostgreSQL interval", flag, text), kIntervalHint);
  }
}

Settings checked_settings(pqxx::connection_base& conn, const std::optional<Settings>& recorded,
                          const InboxPartitionOptions& options) {
  if (options.ahead < 1)
    throw txbox::UsageError(fmt::format("--ahead {} creates no partition ahead", options.ahead),
                            "give 1 or more intervals to create partitions for (default 3)");
  Settings s;
  s.interval = canonical_interval(conn, "--interval",
                                  options.interval.value_or(recorded ? recorded->interval : "1 day"));
  s.retention = canonical_interval(conn, "--retention",
                                   options.retention.value_or(recorded ? recorded->retention : "7 days"));
  pqxx::nontransaction tx(conn);
  auto row = tx.exec_params1(
      "SELECT extract(year FROM $1::interval) <> 0 OR extract(month FROM $1::interval) <> 0, "
      "$1::interval < interval '1 second', $2::interval < $1::interval, "
      "$3::interval IS NOT NULL AND $3::interval <> $1::interval",
      s.interval, s.retention, recorded ? std::optional(recorded->interval) : std::nullopt);
  if (row[0].as<bool>())
    throw txbox::UsageError(
        fmt::format("--interval '{}' has months or years, whose length varies", s.interval),
        "give it in days or shorter units, such as '1 day' or '7 days'");
  if (row[1].as<bool>())
    throw txbox::UsageError(fmt::format("--interval '{}' is shorter than a second", s.interval), kIntervalHint);
  if (row[2].as<bool>())
    throw txbox::UsageError(
        fmt::format("--retention '{}' is shorter than --interval '{}'", s.retention, s.interval),
        "the retention is the dedup window and spans one partition at least: give a retention of "
        "one interval or more");
  if (row[3].as<bool>())
    throw txbox::UsageError(
        fmt::format("the inbox is partitioned by '{}'; --interval '{}' cannot change that",
                    recorded->interval, s.interval),
        "leave out --interval (the retention may change)");
  return s;
}

// Locks the plain inbox for a change of its definition. Waits at most
// kLockTimeoutSeconds for the transactions using it to end (holding up the
// consumers meanwhile, as they queue behind the lock), then fails.
void lock_inbox(pqxx::transaction_base& tx, const SchemaName& schema) {
  tx.exec0(fmt::format("SET LOCAL lock_timeout = '{}s'", kLockTimeoutSeconds));
  try {
    tx.exec0(schema.adapt("LOCK TABLE txbox.inbox IN ACCESS EXCLUSIVE MODE"));
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() != "55P03") throw;
    throw txbox::Error(ErrorKind::unavailable,
                       fmt::format("could not lock {} within {} s: transactions using it did not end; the "
                                   "inbox was not converted",
                                   schema.qualify("inbox"), kLockTimeoutSeconds),
                       "run the command again (cron will); long transactions on the inbox hold it up");
  }
}

constexpr const char* kDropBoundaryCheckSql =
    "ALTER TABLE txbox.inbox DROP CONSTRAINT IF EXISTS inbox_before_partitioning";

// One transaction: the old table renamed to `old_name` and attached as the
// partition of everything before `boundary` to a new partitioned inbox,
// which gets the old table's grants, the settings and the partitioned
// inbox_claim.
void swap_in_partitioned_table(pqxx::connection_base& conn, const SchemaName& schema, const Settings& settings,
                               const std::string& boundary, const std::string& old_name) {
  pqxx::work tx(conn);
  lock_inbox(tx, schema);
  // The privileges granted on the old table, to grant them on the new one.
  auto grants = tx.exec_params(
      "SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END "
      "FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
      "WHERE c.oid = $1::regclass AND a.grantee <> c.relowner",
      schema.qualify("inbox"));
  tx.exec0(schema.adapt("ALTER TABLE txbox.inbox RENAME TO " + tx.quote_name(old_name)));
  tx.exec0(schema.adapt(
      "CREATE TABLE txbox.inbox (consumer text NOT NULL, message_id text NOT NULL, "
      "processed_at timestamptz NOT NULL DEFAULT now()) PARTITION BY RANGE (processed_at)"));
  tx.exec0(schema.adapt("ALTER TABLE txbox.inbox ATTACH PARTITION " + schema.qualify(old_name) +
                        " FOR VALUES FROM (MINVALUE) TO (" + tx.quote(boundary) + ")"));
  for (const auto& grant : grants)
    tx.exec0(fmt::format("GRANT {} ON {} TO {}", grant[0].c_str(), schema.qualify("inbox"), grant[1].c_str()));
  tx.exec0(schema.adapt(
      "CREATE TABLE txbox.inbox_partitioning ("
      " one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),"
      " partition_interval interval NOT NULL,"
      " retention interval NOT NULL,"
      " partitioned_at timestamptz NOT NULL DEFAULT now())"));
  tx.exec_params0(schema.adapt("INSERT INTO txbox.inbox_partitioning (partition_interval, retention) VALUES ($1, $2)"),
                  settings.interval, settings.retention);
  tx.exec0(schema.adapt(kPartitionedClaimSql));
  tx.commit();
}

// Converts the plain table: the old table becomes the partition of
// everything before the first interval boundary at least one interval
// ahead. Its CHECK constraint is added and validated first, in transactions
// of their own that do not block the consumers (VALIDATE takes a SHARE
// UPDATE EXCLUSIVE lock), so that ATTACH, under the exclusive lock, need not
// scan the table. Until the conversion commits, that constraint would refuse
// the consumers' rows once the clock passes the boundary: a conversion that
// fails removes it (and one that is killed has it replaced by the next run,
// which comes long before the boundary when run from cron as documented).
void convert(pqxx::connection_base& conn, const SchemaName& schema, const Settings& settings) {
  std::string boundary, suffix;
  {
    pqxx::work tx(conn);
    auto row = tx.exec_params1(fmt::format("SELECT b::text, to_char(b AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS') "
                                           "FROM (SELECT date_bin($1::interval, now(), {}) + 2 * $1::interval) AS t(b)",
                                           kOrigin),
                               settings.interval);
    boundary = row[0].as<std::string>();
    suffix = row[1].as<std::string>();
    lock_inbox(tx, schema);
    tx.exec0(schema.adapt(kDropBoundaryCheckSql));
    tx.exec0(schema.adapt("ALTER TABLE txbox.inbox ADD CONSTRAINT inbox_before_partitioning CHECK (processed_at < " +
                          tx.quote(boundary) + ") NOT VALID"));
    tx.commit();
  }
  try {
    {
      pqxx::work tx(conn);
      tx.exec0(schema.adapt("ALTER TABLE txbox.inbox VALIDATE CONSTRAINT inbox_before_partitioning"));
      tx.commit();
    }
    swap_in_partitioned_table(conn, schema, settings, boundary, "inbox_before_" + suffix);
  } catch (const std::exception& e) {
    try {
      pqxx::work tx(conn);
      lock_inbox(tx, schema);
      tx.exec0(schema.adapt(kDropBoundaryCheckSql));
      tx.commit();
    } catch (...) {
      throw txbox::Error(ErrorKind::unavailable,
                         fmt::format("{}; and the constraint inbox_before_partitioning (processed_at < '{}') could "
                                     "not be removed from {}",
                                     e.what(), boundary, schema.qualify("inbox")),
                         "run the command again well before then (it replaces the constraint), or drop it: once "
                         "the clock passes it, the inbox refuses new rows");
    }
    throw;
  }
}

// The partitions of <schema>.inbox, by upper bound: name, upper bound,
// whether a DETACH CONCURRENTLY was interrupted, whether expired.
pqxx::result partitions(pqxx::transaction_base& tx, const SchemaName& schema, const std::string& retention) {
  return tx.exec_params(
      "SELECT c.relname, p.upper::text, i.inhdetachpending, p.upper <= now() - $2::interval "
      "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, "
      "LATERAL (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1]::timestamptz) "
      "AS p(upper) WHERE i.inhparent = $1::regclass ORDER BY p.upper",
      schema.qualify("inbox"), retention);
}

// What <schema>.inbox is: 'r' (plain), 'p' (partitioned), or 0 without an
// inbox table; and the settings recorded by the conversion, if any.
std::pair<char, std::optional<Settings>> inbox_state(pqxx::transaction_base& tx, const SchemaName& schema) {
  auto row = tx.exec_params1("SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)), "
                             "to_regclass($2) IS NOT NULL",
                             schema.qualify("inbox"), schema.qualify("inbox_partitioning"));
  const char kind = row[0].is_null() ? 0 : row[0].as<std::string>().at(0);
  if (!row[1].as<bool>()) return {kind, std::nullopt};
  auto s = tx.exec1(schema.adapt("SELECT partition_interval::text, retention::text FROM txbox.inbox_partitioning"));
  return {kind, Settings{s[0].as<std::string>(), s[1].as<std::string>()}};
}

}  // namespace

std::string describe_inbox_layout(pqxx::transaction_base& tx, const SchemaName& schema) {
  auto [kind, recorded] = inbox_state(tx, schema);
  if (kind != 'p') return "plain table";
  if (!recorded) return "partitioned, not by `txbox inbox partition`";
  auto all = partitions(tx, schema, recorded->retention);
  return fmt::format("partitioned by {}, retention {}, {} partitions up to {}", recorded->interval,
                     recorded->retention, all.size(), all.empty() ? "-" : all.back()[1].c_str());
}

InboxPartitionReport partition_inbox(pqxx::connection_base& conn, const SchemaName& schema,
                                     const InboxPartitionOptions& options) {
  SchemaLock lock(conn);
  auto [kind, recorded] = [&] {
    pqxx::nontransaction tx(conn);
    return inbox_state(tx, schema);
  }();
  if (kind == 0)
    throw txbox::ConfigError(fmt::format("schema '{}' has no inbox table", schema.name()),
                             "check --schema; `txbox migrate --schema NAME` creates the txbox tables");
  require_schema(conn, schema);
  if (kind == 'p' && !recorded)
    throw txbox::ConfigError(
        fmt::format("{} is partitioned, but not by `txbox inbox partition` (there is no {})",
                    schema.qualify("inbox"), schema.qualify("inbox_partitioning")),
        "txbox manages only the partitions it created");
  const Settings settings = checked_settings(conn, recorded, options);

  InboxPartitionReport report;
  report.interval = settings.interval;
  report.retention = settings.retention;
  if (kind == 'r') {
    convert(conn, schema, settings);
    report.converted = true;
  } else if (settings.retention != recorded->retention) {
    pqxx::work tx(conn);
    tx.exec_params0(schema.adapt("UPDATE txbox.inbox_partitioning SET retention = $1"), settings.retention);
    tx.commit();
  }

  // Partitions for the current interval and `ahead` more, contiguous from
  // the end of the last one.
  {
    pqxx::work tx(conn);
    auto existing = partitions(tx, schema, settings.retention);
    auto wanted = tx.exec_params(
        fmt::format("SELECT lower::text, (lower + $1::interval)::text, "
                    "'inbox_' || to_char(lower AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS') "
                    "FROM generate_series(coalesce($2::timestamptz, date_bin($1::interval, now(), {0})), "
                    "date_bin($1::interval, now(), {0}) + $3 * $1::interval, $1::interval) AS lower",
                    kOrigin),
        settings.interval,
        existing.empty() ? std::nullopt : std::optional(existing.back()[1].as<std::string>()), options.ahead);
    for (const auto& p : wanted) {
      tx.exec0(schema.adapt("CREATE TABLE " + schema.qualify(p[2].as<std::string>()) +
                            " PARTITION OF txbox.inbox (PRIMARY KEY (consumer, message_id)) FOR VALUES FROM (" +
                            tx.quote(p[0].as<std::string>()) + ") TO (" + tx.quote(p[1].as<std::string>()) + ")"));
      report.created.push_back(fmt::format("{} [{}, {})", p[2].c_str(), p[0].c_str(), p[1].c_str()));
    }
    tx.commit();
  }

  // Expired partitions: detached without blocking the consumers (DETACH
  // CONCURRENTLY waits for the transactions that may still read them and
  // cannot run in a transaction block), then dropped. A detach interrupted
  // earlier is finished first.
  std::vector<std::pair<std::string, bool>> expired;  // name, detach pending
  {
    pqxx::read_transaction tx(conn);
    for (const auto& p : partitions(tx, schema, settings.retention)) {
      if (p[2].as<bool>() || p[3].as<bool>()) {
        expired.emplace_back(p[0].as<std::string>(), p[2].as<bool>());
        report.dropped.push_back(fmt::format("{} [.., {})", p[0].c_str(), p[1].c_str()));
      } else {
        report.covered_until = p[1].as<std::string>();
      }
    }
  }
  for (const auto& [name, pending] : expired) {
    pqxx::nontransaction tx(conn);
    tx.exec0(schema.adapt("ALTER TABLE txbox.inbox DETACH PARTITION " + schema.qualify(name) +
                          (pending ? " FINALIZE" : " CONCURRENTLY")));
    tx.exec0("DROP TABLE " + schema.qualify(name));
  }
  return report;
}

}  // namespace txbox::outbox
