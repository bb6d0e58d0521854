#pragma once
// Redis Streams adapter for txbox, built on hiredis. The public API exposes
// only the broker-neutral interface; hiredis handles stay inside the library.
//
// Destination = stream key. Each message becomes one stream entry with the
// fields `message-id`, `message-key` (omitted when the message has none),
// `payload` and `headers` (a JSON object); the consumer also reads the key
// from the field `key` of entries written before the rename. See
// docs/brokers/redis.md and docs/wire-format.md.

#include <chrono>
#include <memory>
#include <string>

#include "txbox/brokers/broker.hpp"
#include "txbox/brokers/url.hpp"

namespace txbox::redis {

// From redis://[:password@]host:port[/db] (default port 6379, db 0; a user
// name before the password is sent as AUTH user password, Redis 6 ACLs).
// Query options:
//   ?maxlen=N            XADD MAXLEN ~ N (approximate trimming; default: none)
//   ?dedup_ttl=SECONDS   idempotence window (default 86400): a message id
//                        published again within it is confirmed without a
//                        second entry
//   ?connect_timeout_ms=MS  (default 5000)
// start() writes a batch as one pipeline of EVALSHA calls of a Lua script
// that sets txbox:dedup:<stream>:<message-id> (EX ttl) and adds the entry
// only when the key was new, and only when the previous message of the same
// key in the batch is stored (the per-key chain: a failed message never has
// a later one of its key stored behind it); wait() reads every reply. A
// destination that is empty or starts with "txbox:" fails permanently
// without being sent. Thread-safe: a pool of connections, one per batch in
// flight, created lazily; a connection with unread replies is closed, never
// reused. healthy() is false while the server is unreachable or refuses
// writes as a whole (LOADING, READONLY, MISCONF, ...); probe() sends PING and
// a write probe in one round trip.
// `properties` are not used yet; an unknown one throws txbox::UsageError.
// Throws txbox::UsageError naming the problem for a bad URL or option,
// brokers::BrokerError when the server rejects the credentials.
std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties = {});

struct ConsumerOptions {
  std::string stream;
  std::string group;
  std::string consumer_name;
  int count = 100;                              // entries per XREADGROUP / XAUTOCLAIM
  std::chrono::milliseconds block{1000};        // longest XREADGROUP BLOCK within poll()
  std::chrono::milliseconds claim_idle{30000};  // XAUTOCLAIM entries pending longer than this
  int max_deliveries = 10;         // entries delivered more often go to the dead-letter stream
  std::string dead_letter_stream;  // default "<stream>.dlq"
};

// Consumer-group reader of one stream. Creates the group if missing (at id 0,
// MKSTREAM). poll() returns, in this order: entries of other (dead) consumers
// idle longer than claim_idle, taken over with XAUTOCLAIM; this consumer's own
// pending entries (after a restart); new entries (XREADGROUP >). Delivery:
// source = stream, ack_token = entry id, offset = the id's millisecond part,
// delivery_attempt = the entry's delivery count. Entries delivered more than
// max_deliveries times are moved to the dead-letter stream instead of being
// returned. ack() = XACK; dead_letter() = XADD to the dead-letter stream and
// XACK in one MULTI/EXEC. A dead letter keeps the entry's fields and adds the
// dead-letter fields of docs/wire-format.md (dlq-error-class "max-deliveries"
// or "handler", dlq-original-position = the entry id). Reconnects by itself
// (poll() returns nullopt while the server is unreachable). Not thread-safe:
// one thread per consumer.
// Throws txbox::UsageError for bad options, brokers::BrokerError when the
// server rejects the credentials.
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const ConsumerOptions& options);

// What brokers::open_consumer() calls: ConsumerOptions from the subscription.
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription);

}  // namespace txbox::redis
