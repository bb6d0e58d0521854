#include "txbox/outbox/dead_letters.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <pqxx/pqxx>

#include "txbox/core/error.hpp"
#include "txbox/outbox/store.hpp"

namespace txbox::outbox {
namespace {

constexpr const char* kColumns =
    "id, outbox_id, message_id::text, destination, message_key, payload, headers::text, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "to_char(dead_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "attempts, error_class, last_error";

DeadLetter from_row(const pqxx::row& row) {
  DeadLetter d;
  d.id = row[0].as<int64_t>();
  d.outbox_id = row[1].as<int64_t>();
  d.message_id = row[2].as<std::string>();
  d.destination = row[3].as<std::string>();
  if (!row[4].is_null()) d.key = row[4].as<std::string>();
  d.payload = pqxx::binarystring(row[5]).str();
  d.headers_json = row[6].as<std::string>();
  d.created_at = row[7].as<std::string>();
  d.dead_at = row[8].as<std::string>();
  d.attempts = row[9].as<int>();
  d.error_class = row[10].as<std::string>();
  d.last_error = row[11].as<std::string>();
  return d;
}

// Moves the dead letters matching `where` (a condition on dead_letters with
// parameters $1...) back into the outbox in one statement; returns how many.
template <typename... Params>
size_t move_back(pqxx::transaction_base& tx, const SchemaName& schema, std::string_view where,
                 Params&&... params) {
  auto result = tx.exec_params(
      schema.adapt(fmt::format(
          "WITH moved AS (DELETE FROM txbox.dead_letters WHERE {} "
          "RETURNING id, message_id, destination, message_key, payload, headers) "
          "INSERT INTO txbox.outbox (message_id, destination, message_key, payload, headers) "
          "SELECT message_id, destination, message_key, payload, headers FROM moved ORDER BY id",
          where)),
      std::forward<Params>(params)...);
  return result.affected_rows();
}

}  // namespace

std::vector<DeadLetter> list_dead_letters(pqxx::transaction_base& tx, const DeadLetterFilter& filter,
                                          const SchemaName& schema) {
  if (filter.limit <= 0)
    throw txbox::UsageError(fmt::format("dead-letter list limit must be at least 1 (got {})", filter.limit));
  std::string sql = fmt::format("SELECT {} FROM txbox.dead_letters WHERE id > $1", kColumns);
  if (filter.destination) sql += " AND destination = $3";
  sql += " ORDER BY id LIMIT $2";
  sql = schema.adapt(sql);
  pqxx::result rows = filter.destination ? tx.exec_params(sql, filter.after_id, filter.limit, *filter.destination)
                                         : tx.exec_params(sql, filter.after_id, filter.limit);
  std::vector<DeadLetter> out;
  for (const auto& row : rows) out.push_back(from_row(row));
  return out;
}

std::optional<DeadLetter> find_dead_letter(pqxx::transaction_base& tx, int64_t id, const SchemaName& schema) {
  auto result = tx.exec_params(
      schema.adapt(fmt::format("SELECT {} FROM txbox.dead_letters WHERE id = $1", kColumns)), id);
  if (result.empty()) return std::nullopt;
  return from_row(result[0]);
}

size_t replay_dead_letters(pqxx::transaction_base& tx, const std::vector<int64_t>& ids,
                           const SchemaName& schema) {
  std::vector<int64_t> wanted = ids;
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  if (wanted.empty()) return 0;
  const std::string array = pg_array(wanted);

  // Lock the rows first, so a concurrent replay of the same ids waits and then
  // finds them gone, and find the unknown ids before changing anything.
  std::vector<int64_t> found;
  for (const auto& row : tx.exec_params(
           schema.adapt("SELECT id FROM txbox.dead_letters WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"),
           array))
    found.push_back(row[0].as<int64_t>());
  if (found.size() != wanted.size()) {
    std::vector<int64_t> missing;
    std::set_difference(wanted.begin(), wanted.end(), found.begin(), found.end(),
                        std::back_inserter(missing));
    // The ids are well-formed but not there: not a usage error.
    throw txbox::Error(ErrorKind::permanent, fmt::format(
        "no dead letter{} with id{} {}; nothing was replayed (see `txbox dead-letters list`)",
        missing.size() == 1 ? "" : "s", missing.size() == 1 ? "" : "s", fmt::join(missing, ", ")));
  }
  return move_back(tx, schema, "id = ANY($1::bigint[])", array);
}

size_t replay_all_dead_letters(pqxx::transaction_base& tx, const std::optional<std::string>& destination,
                               const SchemaName& schema) {
  if (destination) return move_back(tx, schema, "destination = $1", *destination);
  return move_back(tx, schema, "true");
}

size_t purge_dead_letters(pqxx::transaction_base& tx, std::chrono::seconds older_than,
                          const SchemaName& schema) {
  if (older_than.count() < 0)
    throw txbox::UsageError(fmt::format("purge age must not be negative (got {}s)", older_than.count()));
  auto result = tx.exec_params(
      schema.adapt("DELETE FROM txbox.dead_letters WHERE dead_at < now() - $1 * interval '1 second'"),
      static_cast<int64_t>(older_than.count()));
  return result.affected_rows();
}

std::chrono::seconds parse_duration(std::string_view text) {
  auto bad = [&]() {
    return txbox::UsageError(fmt::format(
        "malformed duration '{}': expected a whole number and a unit, one of s (seconds), "
        "m (minutes), h (hours), d (days), w (weeks), e.g. 45s, 15m, 12h, 30d, 2w",
        text));
  };
  if (text.size() < 2) throw bad();
  int64_t unit = 0;
  switch (text.back()) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 7 * 86400; break;
    default: throw bad();
  }
  int64_t value = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') throw bad();
    // Cap far beyond any useful age (about 31,000 years) to stay clear of overflow.
    if (value > (int64_t{1} << 40) / 10) throw bad();
    value = value * 10 + (c - '0');
  }
  if (value > (int64_t{1} << 40) / unit) throw bad();
  return std::chrono::seconds(value * unit);
}

}  // namespace txbox::outbox
