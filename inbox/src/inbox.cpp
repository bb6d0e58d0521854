#include "txbox/inbox/inbox.hpp"


#include <pqxx/pqxx>

#include "txbox/core/error.hpp"

namespace txbox::inbox {

const char* to_string(Outcome outcome) noexcept {
  return outcome == Outcome::processed ? "processed" : "duplicate";
}

Inbox::Inbox(std::string consumer, InboxOptions options)
    : consumer_(std::move(consumer)),
      options_(std::move(options)),
      insert_sql_(options_.schema.adapt(
          "INSERT INTO txbox.inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")),
      seen_sql_(options_.schema.adapt("SELECT 1 FROM txbox.inbox WHERE consumer = $1 AND message_id = $2")) {
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

bool Inbox::seen(pqxx::transaction_base& tx, std::string_view message_id) const {
  return !tx.exec_params(seen_sql_, consumer_, std::string(message_id)).empty();
}

}  // namespace txbox::inbox
