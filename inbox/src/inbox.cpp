#include "txbox/inbox/inbox.hpp"

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
      insert_sql_(options_.schema.adapt(
          "INSERT INTO txbox.inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")),
      seen_sql_(options_.schema.adapt("SELECT 1 FROM txbox.inbox WHERE consumer = $1 AND message_id = $2")),
      claim_sql_(options_.schema.adapt(
          "INSERT INTO txbox.inbox (consumer, message_id) SELECT $1, unnest($2::text[]) "
          "ON CONFLICT DO NOTHING RETURNING message_id")),
      release_sql_(options_.schema.adapt(
          "DELETE FROM txbox.inbox WHERE consumer = $1 AND message_id = ANY($2::text[])")) {
  if (consumer_.empty())
    throw txbox::UsageError(
        "inbox consumer name is empty: give each consumer a stable name such as "
        "'billing.order-events'");
}

Outcome Inbox::process(pqxx::transaction_base& tx, std::string_view message_id,
                       const Handler& handler) const {
  if (message_id.empty())
    throw txbox::UsageError("inbox: message id is empty; every message needs an id");
  // ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the
  // same id and then inserts nothing, so two racing deliveries run the
  // handler once.
  auto inserted = tx.exec_params(insert_sql_, consumer_, std::string(message_id));
  if (inserted.affected_rows() == 0) return Outcome::duplicate;
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
  for (const auto& row : tx.exec_params(claim_sql_, consumer_, pg_array(ids)))
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
