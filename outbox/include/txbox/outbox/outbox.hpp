#pragma once
// txbox::outbox — enqueue messages in the caller's transaction.
//
// Like libpqxx itself, every call takes the caller's transaction and never
// commits it: the outbox rows commit or roll back together with the
// service's own writes. The relay (txbox-relay) delivers committed rows.

#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "txbox/core/error.hpp"
#include "txbox/core/schema_name.hpp"

namespace pqxx {
class transaction_base;
}

namespace txbox::outbox {

struct Message {
  // Where the relay sends it: Kafka topic, AMQP exchange/routing key, NATS
  // subject, Redis stream. Required.
  std::string destination;
  // Ordering key: messages with the same key are delivered in enqueue order.
  // Also the Kafka partition key. nullopt = no ordering promised.
  std::optional<std::string> key;
  // Raw bytes.
  std::string payload;
  // Sent as broker headers (string values only).
  std::vector<std::pair<std::string, std::string>> headers;
  // Explicit message id (a UUID, any case); nullopt = a new random UUID.
  // Consumers' inboxes deduplicate on it.
  std::optional<std::string> message_id;
};

// Thrown for a message that cannot be enqueued (empty destination, malformed
// message id, ...). Nothing has been written when it is thrown.
class InvalidMessage : public txbox::UsageError {
  using txbox::UsageError::UsageError;
};

struct OutboxOptions {
  // The schema whose outbox table the rows go to (as migrated by `txbox
  // migrate --schema NAME`); the relay of that schema delivers them.
  SchemaName schema;
};

class Outbox {
 public:
  explicit Outbox(OutboxOptions options = {});

  // Inserts one row in `tx`; returns its message id.
  std::string enqueue(pqxx::transaction_base& tx, const Message& message) const;

  // Inserts all rows with ONE statement (one round trip), in order; returns
  // their message ids in the same order. An empty batch does nothing.
  std::vector<std::string> enqueue(pqxx::transaction_base& tx,
                                   std::span<const Message> messages) const;

 private:
  OutboxOptions options_;
  std::string insert_sql_;
};

// A new random (version 4) UUID in canonical lower-case text form.
std::string new_message_id();

// True for a canonical 8-4-4-4-12 hex UUID.
bool is_uuid(std::string_view text) noexcept;

}  // namespace txbox::outbox
