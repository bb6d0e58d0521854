#include "txbox/inbox/inbox.hpp"

#include <fmt/format.h>

#include <pqxx/pqxx>
#include <unordered_set>

#include "txbox/core/error.hpp"
#include "txbox/core/pg_array.hpp"

namespace txbox::inbox {

const char* to_string(Outcome outcome) noexcept {
  return outcome == Outcome::processed ? "processed" : "duplicate";
}

Inbox::Inbox(std::string consumer, InboxOptions options)
    : consumer_(std::move(consumer)),
      options_(std::move(options)),
      // Through the schema's function (migration 0004), which knows the
      // inbox's layout: a plain table, or partitions (docs/inbox.md).
      process_sql_(options_.schema.adapt("SELECT txbox.inbox_claim($1, ARRAY[$2::text])")),
      seen_sql_(options_.schema.adapt("SELECT 1 FROM txbox.inbox WHERE consumer = $1 AND message_id = $2")),
      claim_sql_(options_.schema.adapt("SELECT txbox.inbox_claim($1, $2::text[])")),
      release_sql_(options_.schema.adapt(
          "DELETE FROM txbox.inbox WHERE consumer = $1 AND message_id = ANY($2::text[])")) {
  if (consumer_.empty())
    throw txbox::UsageError(
        "inbox consumer name is empty: give each consumer a stable name such as "
        "'billing.order-events'");
}

pqxx::result Inbox::claimed(pqxx::transaction_base& tx, const std::string& sql, const std::string& ids) const {
  try {
    return tx.exec_params(sql, consumer_, ids);
  } catch (const pqxx::undefined_function&) {
    throw txbox::Error(
        ErrorKind::unavailable,
        fmt::format("the database has no function {}.inbox_claim, which this txbox claims inbox ids with",
                    options_.schema.quoted()),
        Retryable{false},
        fmt::format("apply migration 0004 with `txbox migrate --database-url URL{}`", options_.schema.command_flag()));
  } catch (const pqxx::check_violation& e) {
    // Only a partitioned inbox refuses a claim's rows (the plain table has
    // no CHECK constraint): no partition reaches the current time, as the
    // partition upkeep stopped running (or an interrupted conversion left
    // its boundary constraint behind). Both are what that command repairs.
    const std::string_view server_error(e.what());
    throw txbox::Error(
        ErrorKind::unavailable,
        fmt::format("the inbox {} cannot take new rows: {}", options_.schema.qualify("inbox"),
                    server_error.substr(0, server_error.find('\n'))),
        Retryable{true},
        fmt::format("run `txbox inbox partition --database-url URL{}` to create the partitions up to now, and "
                    "keep it running from cron more often than once per interval (docs/inbox.md)",
                    options_.schema.command_flag()));
  }
}

Outcome Inbox::process(pqxx::transaction_base& tx, std::string_view message_id,
                       const Handler& handler) const {
  if (message_id.empty())
    throw txbox::UsageError("inbox: message id is empty; every message needs an id");
  // inbox_claim waits for a concurrent uncommitted claim of the same id and
  // then records nothing, so two racing deliveries run the handler once.
  auto inserted = claimed(tx, process_sql_, std::string(message_id));
  if (inserted.empty()) return Outcome::duplicate;
  handler(tx);
  return Outcome::processed;
}

Outcome Inbox::process(pqxx::connection_base& conn, std::string_view message_id,
                       const Handler& handler) const {
  pqxx::work tx(conn, "txbox-inbox");
  auto outcome = process(static_cast<pqxx::transaction_base&>(tx), message_id, handler);
  tx.commit();  // on duplicate this commits nothing at all
  return outcome;
}

std::vector<bool> Inbox::claim(pqxx::transaction_base& tx, std::span<const std::string> ids) const {
  for (const auto& id : ids)
    if (id.empty()) throw txbox::UsageError("inbox: message id is empty; every message needs an id");
  std::unordered_set<std::string> inserted;
  for (const auto& row : claimed(tx, claim_sql_, pg_array(ids)))
    inserted.insert(row[0].as<std::string>());
  std::vector<bool> fresh;
  fresh.reserve(ids.size());
  // An id twice in `ids` was inserted once: only its first copy is new.
  for (const auto& id : ids) fresh.push_back(inserted.erase(id) > 0);
  return fresh;
}

void Inbox::release(pqxx::transaction_base& tx, std::span<const std::string> ids) const {
  if (!ids.empty()) tx.exec_params0(release_sql_, consumer_, pg_array(ids));
}

bool Inbox::seen(pqxx::transaction_base& tx, std::string_view message_id) const {
  return !tx.exec_params(seen_sql_, consumer_, std::string(message_id)).empty();
}

}  // namespace txbox::inbox
