#include "txbox/outbox/store.hpp"

#include <fmt/format.h>

#include <cmath>
#include <string>
#include <string_view>
#include <pqxx/pqxx>

namespace txbox::outbox {
namespace {

// Due rows of the given lanes, in lane order and id order within a lane,
// cut at $4 rows and $5 payload bytes (the first row always comes; alone
// and without its payload when it is larger than $5). A row whose key has
// an earlier row waiting for its retry time is not due; rows and keys in
// flight ($2, $3) are skipped. When nothing is due, the second branch
// tells when the earliest waiting row of the lanes becomes due (evaluated
// only then).
constexpr const char* kClaimSql = R"sql(
WITH lanes AS (
  SELECT l.lane, l.pos FROM unnest($1::smallint[]) WITH ORDINALITY AS l(lane, pos)
), candidates AS (
  SELECT l.pos, o.*
  FROM lanes l
  CROSS JOIN LATERAL (
    SELECT o.id, o.xmin AS version, o.lane, o.message_id, o.destination, o.message_key, o.payload,
           o.headers, o.attempts, o.created_at, o.first_failed_at
    FROM txbox.outbox o
    WHERE o.lane = l.lane
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
      AND o.id <> ALL ($2::bigint[])
      AND (o.message_key IS NULL OR o.message_key <> ALL ($3::text[]))
      AND NOT EXISTS (
        SELECT 1 FROM txbox.outbox b
        WHERE b.lane = l.lane AND b.attempts > 0 AND b.message_key = o.message_key
          AND b.id < o.id AND b.next_attempt_at > now())
    -- (lane, id), not just id: so the plan is a range scan of the lane's
    -- index whatever the statistics say about one lane holding most rows.
    ORDER BY o.lane, o.id
    LIMIT $4) o
  LIMIT $4
), sized AS (
  SELECT c.*, octet_length(c.payload) AS bytes,
         sum(octet_length(c.payload)) OVER w AS running,
         row_number() OVER w AS n,
         count(*) OVER () AS candidates
  FROM candidates c
  WINDOW w AS (ORDER BY c.pos, c.id ROWS UNBOUNDED PRECEDING)
), claimed AS (
  SELECT * FROM sized WHERE running <= $5 OR n = 1
)
SELECT id, version::text::bigint, lane, message_id::text, destination, message_key,
       CASE WHEN running <= $5 THEN payload END, bytes, headers::text, attempts,
       (extract(epoch FROM created_at) * 1000000)::int8, (extract(epoch FROM first_failed_at) * 1000000)::int8,
       candidates, NULL::float8 AS next_due, pg_backend_pid()
FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL::int8, NULL::int8, NULL,
       (SELECT extract(epoch FROM min(o.next_attempt_at) - now())::float8
        FROM txbox.outbox o
        WHERE o.lane = ANY ($1::smallint[]) AND o.attempts > 0 AND o.next_attempt_at > now()),
       pg_backend_pid()
WHERE NOT EXISTS (SELECT 1 FROM claimed))sql";

constexpr const char* kFetchChunkSql = R"sql(
SELECT substring(payload FROM $4 FOR $5) FROM txbox.outbox WHERE lane = $2 AND id = $1 AND xmin = $3::text::xid)sql";

// Shared by the two completion statements below: the new values of a
// retried row (alias o, its retry r), and the move of the rows deleted by a
// CTE `dead` into the dead-letter table (CTE `moved`, one outbox_id a row).
constexpr std::string_view kRetrySet = R"sql(SET attempts = o.attempts + 1,
      next_attempt_at = now() + r.delay_ms * interval '1 millisecond',
      first_failed_at = coalesce(o.first_failed_at, now()),
      last_error = r.error)sql";
constexpr std::string_view kMoveDeadRows = R"sql(  RETURNING o.id, o.message_id, o.destination, o.message_key, o.payload, o.headers, o.created_at,
            o.attempts, d.error_class, d.reason
), moved AS (
  INSERT INTO txbox.dead_letters (outbox_id, message_id, destination, message_key, payload, headers,
                                  created_at, attempts, error_class, last_error)
  SELECT id, message_id, destination, message_key, payload, headers, created_at, attempts + 1,
         error_class, reason
  FROM dead ORDER BY id
  RETURNING outbox_id
))sql";

// Completes a batch: deletes the published row versions, reschedules the
// retries, moves the dead letters. Only the claimed versions are touched
// (lane, id and xmin as claimed): a row changed by someone else since is a
// new version and is left alone. Rows locked by another session make this
// statement wait, up to the session's lock_timeout; then the one below runs.
const std::string kCompleteSql = R"sql(
WITH published AS (
  DELETE FROM txbox.outbox o
  USING unnest($1::bigint[], $2::smallint[], $3::xid[]) AS d(id, lane, version)
  WHERE o.lane = d.lane AND o.id = d.id AND o.xmin = d.version
  RETURNING o.id
), retried AS (
  UPDATE txbox.outbox o
  )sql" + std::string(kRetrySet) + R"sql(
  FROM unnest($4::bigint[], $5::smallint[], $6::xid[], $7::bigint[], $8::text[])
    AS r(id, lane, version, delay_ms, error)
  WHERE o.lane = r.lane AND o.id = r.id AND o.xmin = r.version
  RETURNING o.id
), dead AS (
  DELETE FROM txbox.outbox o
  USING unnest($9::bigint[], $10::smallint[], $11::xid[], $12::text[], $13::text[])
    AS d(id, lane, version, error_class, reason)
  WHERE o.lane = d.lane AND o.id = d.id AND o.xmin = d.version
)sql" + std::string(kMoveDeadRows) + R"sql(
SELECT (SELECT count(*) FROM published), (SELECT count(*) FROM retried), (SELECT count(*) FROM moved),
       -- Nothing is skipped here ($14, the number of rows, is for the statement below).
       CASE WHEN $14::bigint < 0 THEN ARRAY[0::bigint] END)sql";

// The same, never waiting for a row lock: the claimed versions are locked
// first with FOR UPDATE SKIP LOCKED (which costs a lock record per row, so
// this only runs after the statement above timed out on a lock), and only
// those are completed; versions locked by another session are left, and
// reported. Everything a statement reads sees the rows as they were before
// it, so a claimed version still there that none of the three changed was
// locked.
const std::string kCompleteSkippingLockedSql = R"sql(
WITH claimed AS (
  SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::xid[]) AS c(id, lane, version)
  UNION ALL SELECT * FROM unnest($4::bigint[], $5::smallint[], $6::xid[])
  UNION ALL SELECT * FROM unnest($9::bigint[], $10::smallint[], $11::xid[])
), locked AS (
  SELECT o.lane, o.id FROM txbox.outbox o
  JOIN claimed c ON o.lane = c.lane AND o.id = c.id AND o.xmin = c.version
  FOR UPDATE OF o SKIP LOCKED
), published AS (
  DELETE FROM txbox.outbox o
  USING unnest($1::bigint[], $2::smallint[]) AS d(id, lane) JOIN locked l USING (lane, id)
  WHERE o.lane = d.lane AND o.id = d.id
  RETURNING o.id
), retried AS (
  UPDATE txbox.outbox o
  )sql" + std::string(kRetrySet) + R"sql(
  FROM unnest($4::bigint[], $5::smallint[], $7::bigint[], $8::text[]) AS r(id, lane, delay_ms, error)
       JOIN locked l USING (lane, id)
  WHERE o.lane = r.lane AND o.id = r.id
  RETURNING o.id
), dead AS (
  DELETE FROM txbox.outbox o
  USING unnest($9::bigint[], $10::smallint[], $12::text[], $13::text[]) AS d(id, lane, error_class, reason)
        JOIN locked l USING (lane, id)
  WHERE o.lane = d.lane AND o.id = d.id
)sql" + std::string(kMoveDeadRows) + R"sql(, counts AS (
  SELECT (SELECT count(*) FROM published) AS deleted, (SELECT count(*) FROM retried) AS retried,
         (SELECT count(*) FROM moved) AS moved
)
SELECT deleted, retried, moved,
       -- Only when something was left: which claimed versions were locked.
       CASE WHEN deleted + retried + moved < $14 THEN
         ARRAY(SELECT o.id FROM txbox.outbox o
               JOIN claimed c ON o.lane = c.lane AND o.id = c.id AND o.xmin = c.version
               WHERE o.id NOT IN (SELECT id FROM published UNION ALL SELECT id FROM retried
                                  UNION ALL SELECT outbox_id FROM moved))
       END
FROM counts)sql";

constexpr const char* kJoinFleetSql = "SELECT pg_advisory_lock_shared($1, 0), pg_backend_pid()";

constexpr const char* kChangeLanesSql = R"sql(
SELECT ARRAY(SELECT l FROM unnest($2::smallint[]) l WHERE pg_advisory_unlock($1, l)),
       ARRAY(SELECT l FROM unnest($3::smallint[]) l WHERE pg_try_advisory_lock($1, l)))sql";

// Relay workers hold the shared presence lock; lanes are the lane-class
// locks. Both are two-key advisory locks: classid = key 1, objid = key 2,
// objsubid = 2.
constexpr const char* kFleetSql = R"sql(
SELECT
  (SELECT count(*) FROM pg_locks k
   WHERE k.locktype = 'advisory' AND k.database = d.oid AND k.classid = $1::oid
     AND k.objid = 0 AND k.objsubid = 2 AND k.granted),
  ARRAY(SELECT k.objid::int FROM pg_locks k
        WHERE k.locktype = 'advisory' AND k.database = d.oid AND k.classid = $2::oid
          AND k.objsubid = 2 AND k.granted),
  ARRAY(SELECT l FROM unnest($3::smallint[]) l
        WHERE EXISTS (SELECT 1 FROM txbox.outbox o
                      WHERE o.lane = l AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()))),
  CASE WHEN $4::bigint > 0 THEN
    setval('txbox.relay_wakeup_until',
           greatest(coalesce(pg_sequence_last_value('txbox.relay_wakeup_until'), 0),
                    extract(epoch FROM clock_timestamp())::bigint + $4::bigint))
  END
FROM pg_database d WHERE d.datname = current_database())sql";

constexpr const char* kWantWakeupsSql = R"sql(
SELECT setval('txbox.relay_wakeup_until',
              greatest(coalesce(pg_sequence_last_value('txbox.relay_wakeup_until'), 0),
                       extract(epoch FROM clock_timestamp())::bigint + $1::bigint)))sql";
constexpr const char* kOutboxEmptySql = "SELECT NOT EXISTS (SELECT 1 FROM txbox.outbox)";

constexpr int64_t kFetchChunkBytes = int64_t{4} << 20;

TimePoint from_epoch_us(int64_t microseconds) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::microseconds(microseconds)));
}

std::vector<Lane> parse_lane_array(const pqxx::field& field) {
  std::vector<Lane> lanes;
  auto parser = field.as_array();
  for (auto item = parser.get_next(); item.first != pqxx::array_parser::done;
       item = parser.get_next()) {
    if (item.first == pqxx::array_parser::string_value)
      lanes.push_back(static_cast<Lane>(std::stoi(item.second)));
  }
  return lanes;
}


int lock_class_for(const SchemaName& schema) {
  // The default schema keeps the classes of earlier releases ("tx", "ty"),
  // so relays of both versions see each other during an upgrade. Others: an
  // even FNV-1a hash of the name (presence is the odd one above it).
  if (schema.name() == SchemaName::kDefault) return 0x7478;
  uint32_t hash = 2166136261u;
  for (unsigned char c : schema.name()) hash = (hash ^ c) * 16777619u;
  return static_cast<int>((hash & 0x3ffffffeu) | 0x10000u);
}

}  // namespace

OutboxStore::OutboxStore(pqxx::connection_base& conn, const SchemaName& schema)
    : conn_(conn), channel_(schema.wakeup_channel()), lock_class_(lock_class_for(schema)) {
  conn_.prepare("txbox_claim", schema.adapt(kClaimSql));
  conn_.prepare("txbox_fetch_chunk", schema.adapt(kFetchChunkSql));
  conn_.prepare("txbox_complete", schema.adapt(kCompleteSql));
  conn_.prepare("txbox_complete_skipping_locked", schema.adapt(kCompleteSkippingLockedSql));
  conn_.prepare("txbox_change_lanes", kChangeLanesSql);
  conn_.prepare("txbox_fleet", schema.adapt(kFleetSql));
  conn_.prepare("txbox_want_wakeups", schema.adapt(kWantWakeupsSql));
  conn_.prepare("txbox_outbox_empty", schema.adapt(kOutboxEmptySql));
}

Claim OutboxStore::claim(const ClaimRequest& request) {
  Claim claim;
  if (request.lanes.empty()) return claim;
  pqxx::nontransaction tx(conn_);
  auto result = tx.exec_prepared("txbox_claim", pg_array(request.lanes), pg_array(request.exclude_ids),
                                 pg_array(request.exclude_keys), request.max_rows, request.max_bytes);
  int64_t candidates = 0;
  claim.rows.reserve(result.size());
  for (const auto& r : result) {
    claim.backend_pid = r[14].as<int>();
    if (r[0].is_null()) {  // nothing due: the second branch
      if (!r[13].is_null())
        claim.next_due_in = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(r[13].as<double>() * 1000)));
      continue;
    }
    ClaimedRow row;
    row.row.id = r[0].as<int64_t>();
    row.row.version = static_cast<uint32_t>(r[1].as<int64_t>());
    row.row.lane = static_cast<Lane>(r[2].as<int>());
    row.message_id = r[3].as<std::string>();
    row.destination = r[4].as<std::string>();
    if (!r[5].is_null()) row.key = r[5].as<std::string>();
    if (!r[6].is_null()) row.payload = pqxx::binarystring(r[6]).str();
    row.payload_bytes = r[7].as<int64_t>();
    row.headers_json = r[8].as<std::string>();
    row.attempts = r[9].as<int>();
    row.created_at = from_epoch_us(r[10].as<int64_t>());
    if (!r[11].is_null()) row.first_failed_at = from_epoch_us(r[11].as<int64_t>());
    candidates = r[12].as<int64_t>();
    claim.rows.push_back(std::move(row));
  }
  claim.full = !claim.rows.empty() &&
               (static_cast<int64_t>(claim.rows.size()) < candidates ||
                static_cast<int>(claim.rows.size()) >= request.max_rows);
  return claim;
}

std::optional<std::string> OutboxStore::fetch_payload(RowVersion row, int64_t bytes) {
  std::string payload;
  payload.reserve(static_cast<size_t>(bytes));
  for (int64_t offset = 0; offset < bytes || offset == 0; offset += kFetchChunkBytes) {
    pqxx::nontransaction tx(conn_);
    auto result = tx.exec_prepared("txbox_fetch_chunk", row.id, row.lane, std::to_string(row.version),
                                   offset + 1, kFetchChunkBytes);
    if (result.empty()) return std::nullopt;
    payload += pqxx::binarystring(result[0][0]).str();
    if (bytes == 0) break;
  }
  return payload;
}

CompletionCounts OutboxStore::complete(const Completion& c) {
  // Columns of the three lists, as array parameters.
  struct Rows {
    std::vector<int64_t> ids;
    std::vector<Lane> lanes;
    std::vector<std::string> versions;
    void add(const RowVersion& row) {
      ids.push_back(row.id);
      lanes.push_back(row.lane);
      versions.push_back(std::to_string(row.version));
    }
  } published, retried, dead;
  std::vector<int64_t> retry_delays;
  std::vector<std::string> retry_errors, dead_classes, dead_reasons;
  for (const auto& row : c.published) published.add(row);
  for (const auto& retry : c.retries) {
    retried.add(retry.row);
    retry_delays.push_back(retry.delay.count());
    retry_errors.push_back(retry.error);
  }
  for (const auto& letter : c.dead_letters) {
    dead.add(letter.row);
    dead_classes.push_back(letter.error_class);
    dead_reasons.push_back(letter.reason);
  }
  const auto total = static_cast<int64_t>(published.ids.size() + retried.ids.size() + dead.ids.size());
  auto run = [&](const char* statement) {
    pqxx::nontransaction tx(conn_);
    return tx.exec_prepared1(statement, pg_array(published.ids), pg_array(published.lanes),
                             pg_array(published.versions), pg_array(retried.ids), pg_array(retried.lanes),
                             pg_array(retried.versions), pg_array(retry_delays), pg_array(retry_errors),
                             pg_array(dead.ids), pg_array(dead.lanes), pg_array(dead.versions),
                             pg_array(dead_classes), pg_array(dead_reasons), total);
  };
  pqxx::row row;
  try {
    row = run("txbox_complete");
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() != "55P03") throw;  // not a lock timeout
    row = run("txbox_complete_skipping_locked");
  }
  CompletionCounts counts{row[0].as<size_t>(), row[1].as<size_t>(), row[2].as<size_t>(), {}};
  if (row[3].is_null()) return counts;
  auto parser = row[3].as_array();
  for (auto item = parser.get_next(); item.first != pqxx::array_parser::done; item = parser.get_next())
    if (item.first == pqxx::array_parser::string_value) counts.locked.push_back(std::stoll(item.second));
  return counts;
}

int OutboxStore::join_fleet() {
  // Not prepared: it is a session's first statement, and behind a pooler
  // that shares server sessions a prepared statement would clash before the
  // relay could tell what is wrong.
  pqxx::nontransaction tx(conn_);
  return tx.exec_params1(kJoinFleetSql, presence_lock_class())[1].as<int>();
}

std::vector<Lane> OutboxStore::change_lanes(std::span<const Lane> acquire, std::span<const Lane> release) {
  if (acquire.empty() && release.empty()) return {};
  pqxx::nontransaction tx(conn_);
  auto row = tx.exec_prepared1("txbox_change_lanes", lane_lock_class(), pg_array(release), pg_array(acquire));
  return parse_lane_array(row[1]);
}

FleetView OutboxStore::fleet(std::span<const Lane> due_check, std::chrono::seconds wakeups_for) {
  pqxx::nontransaction tx(conn_);
  auto row = tx.exec_prepared1("txbox_fleet", presence_lock_class(), lane_lock_class(), pg_array(due_check),
                               static_cast<int64_t>(wakeups_for.count()));
  FleetView view;
  view.workers = row[0].as<int>();
  view.taken = parse_lane_array(row[1]);
  view.due = parse_lane_array(row[2]);
  return view;
}

void OutboxStore::want_wakeups(std::chrono::seconds duration) {
  pqxx::nontransaction tx(conn_);
  tx.exec_prepared("txbox_want_wakeups", static_cast<int64_t>(duration.count()));
}

bool OutboxStore::outbox_empty() {
  pqxx::nontransaction tx(conn_);
  return tx.exec_prepared1("txbox_outbox_empty")[0].as<bool>();
}

}  // namespace txbox::outbox
