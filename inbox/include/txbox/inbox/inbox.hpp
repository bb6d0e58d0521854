#pragma once
// txbox::inbox — consumer-side idempotency.
//
// The inbox table records which message ids a consumer has processed. The
// handler's writes and the inbox row commit in ONE transaction, so a message
// the broker delivers again is recognised and skipped.

#include <functional>
#include <string>
#include <span>
#include <string_view>
#include <vector>

#include "txbox/core/schema_name.hpp"

namespace pqxx {
class connection_base;
class result;
class transaction_base;
}  // namespace pqxx

namespace txbox::inbox {

enum class Outcome {
  processed,  // the handler ran and its transaction committed
  duplicate,  // this consumer had already processed the message id; handler not run
};

const char* to_string(Outcome outcome) noexcept;

struct InboxOptions {
  // The schema whose inbox table records processed ids (as migrated by
  // `txbox migrate --schema NAME`).
  SchemaName schema;
};

// The handler receives the transaction its writes belong to. It must not
// commit or abort it. Throwing rolls back the handler's writes and the inbox
// row alike, so the message is processed again on redelivery.
using Handler = std::function<void(pqxx::transaction_base& tx)>;

class Inbox {
 public:
  // `consumer` names the logical consumer (for example the service and its
  // purpose): each consumer has its own record of processed ids.
  explicit Inbox(std::string consumer, InboxOptions options = {});

  const std::string& consumer() const noexcept { return consumer_; }

  // Opens a transaction on `conn`, records the message id, runs the handler
  // and commits. A duplicate is detected before the handler runs and nothing
  // is written. When another transaction is processing the same id at the
  // same moment, this call waits for it and then reports a duplicate (or
  // processes the message, if the other one rolled back).
  Outcome process(pqxx::connection_base& conn, std::string_view message_id,
                  const Handler& handler) const;

  // Same, inside the caller's transaction, which the caller commits. On
  // duplicate the handler is not run and nothing is written.
  Outcome process(pqxx::transaction_base& tx, std::string_view message_id,
                  const Handler& handler) const;

  // All of these work on either inbox layout, the plain table or the
  // time-partitioned one (docs/inbox.md); claiming goes through the schema's
  // inbox_claim() function (migration 0004), and without it throws an error
  // saying to run `txbox migrate`.
  //
  // Batches (one statement each, in the caller's transaction):
  // claim() records every id not yet recorded and returns, per id, whether
  // it is new (false: processed before, being processed by a concurrent
  // transaction that then commits, or an earlier copy in `ids`); release()
  // removes ids claimed in this transaction whose handling was rolled back,
  // so a redelivery runs them again.
  std::vector<bool> claim(pqxx::transaction_base& tx, std::span<const std::string> ids) const;
  void release(pqxx::transaction_base& tx, std::span<const std::string> ids) const;

  // Whether this consumer has processed (committed) the message id.
  bool seen(pqxx::transaction_base& tx, std::string_view message_id) const;

 private:
  // Runs inbox_claim (`sql`) for `ids`; its rows are the ids newly recorded.
  pqxx::result claimed(pqxx::transaction_base& tx, const std::string& sql, const std::string& ids) const;

  std::string consumer_;
  InboxOptions options_;
  std::string process_sql_, seen_sql_, claim_sql_, release_sql_;
};

}  // namespace txbox::inbox
