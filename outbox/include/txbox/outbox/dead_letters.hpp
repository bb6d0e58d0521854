#pragma once
// txbox::outbox dead letters — inspect, replay and purge txbox.dead_letters
// (sql/0002_dead_letters.sql). The relay moves a row there after a permanent
// publish error, or after its max attempts of transient errors.
//
// Like the rest of the library, every call takes the caller's transaction and
// never commits it, and the txbox schema to work in (default "txbox").

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/core/error.hpp"
#include "txbox/core/schema_name.hpp"

namespace pqxx {
class transaction_base;
}

namespace txbox::outbox {

struct DeadLetter {
  int64_t id = 0;         // id in txbox.dead_letters
  int64_t outbox_id = 0;  // id the row had in txbox.outbox
  std::string message_id;
  std::string destination;
  std::optional<std::string> key;
  std::string payload;       // raw bytes
  std::string headers_json;  // the headers jsonb as text (a JSON object of strings)
  std::string created_at;    // when the service enqueued it, ISO 8601 UTC (…Z)
  std::string dead_at;       // when it was dead-lettered, ISO 8601 UTC (…Z)
  int attempts = 0;          // publish attempts made
  std::string error_class;   // "permanent" or "transient"
  std::string last_error;
};

struct DeadLetterFilter {
  std::optional<std::string> destination;  // only this destination
  int limit = 100;                         // at most this many rows (> 0)
  int64_t after_id = 0;                    // only ids > after_id (paging)
};

// Dead letters ordered by id, with every field (payload in full).
// Throws txbox::UsageError when filter.limit <= 0.
std::vector<DeadLetter> list_dead_letters(pqxx::transaction_base& tx,
                                          const DeadLetterFilter& filter = {},
                                          const SchemaName& schema = SchemaName());

// The dead letter with this id, or nullopt.
std::optional<DeadLetter> find_dead_letter(pqxx::transaction_base& tx, int64_t id,
                                           const SchemaName& schema = SchemaName());

// Moves the given dead letters back into txbox.outbox with the same message
// id, destination, key, payload and headers (attempts 0, created_at now, new
// outbox ids in dead-letter id order, so they go after their key's current
// rows) and deletes them from txbox.dead_letters, in `tx`. Duplicate ids count
// once. Returns the number replayed.
// Throws txbox::Error (kind permanent) naming the ids that are not dead letters; then
// nothing has been changed.
size_t replay_dead_letters(pqxx::transaction_base& tx, const std::vector<int64_t>& ids,
                           const SchemaName& schema = SchemaName());

// Replays every dead letter (of `destination`, when given), in id order.
size_t replay_all_dead_letters(pqxx::transaction_base& tx,
                               const std::optional<std::string>& destination = {},
                               const SchemaName& schema = SchemaName());

// Deletes the dead letters whose dead_at is more than `older_than` before the
// transaction's start time. Returns the number deleted.
// Throws txbox::UsageError for a negative duration.
size_t purge_dead_letters(pqxx::transaction_base& tx, std::chrono::seconds older_than,
                          const SchemaName& schema = SchemaName());

// "45s", "15m", "12h", "30d", "2w" -> seconds (a non-negative integer and one
// unit letter). Throws txbox::UsageError naming the accepted forms.
std::chrono::seconds parse_duration(std::string_view text);

}  // namespace txbox::outbox
