#pragma once
// The one interface every broker adapter implements.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/brokers/message.hpp"
#include "txbox/core/error.hpp"

namespace txbox::brokers {

using txbox::ErrorKind;

// Thrown by adapters for failures that are not per-message outcomes: a
// client that cannot be created, a broker that refuses the login, an ack the
// broker did not take. The kind says which (txbox/core/error.hpp): config
// for a bad property or option, unavailable for a broker that cannot be
// reached (retryable), permanent for a refusal that will not change (login
// refused, topology conflict), internal for misuse of the adapter.
class BrokerError : public txbox::Error {
 public:
  BrokerError(ErrorKind kind, const std::string& what, const std::string& hint = {})
      : txbox::Error(kind, what, hint) {}
};

// Extra client properties passed through verbatim to the underlying client
// library (for Kafka: librdkafka configuration properties).
using Properties = std::map<std::string, std::string>;

// One batch handed to the broker by Publisher::start(): the messages are on
// their way; wait() collects the broker's verdict on each of them.
class PendingPublish {
 public:
  virtual ~PendingPublish() = default;

  // Blocks until every message of the batch has an outcome (confirmed by the
  // broker, or failed) or `deadline` passes; returns one result per message,
  // in the order given to start(). A message without an outcome at the
  // deadline is a transient failure (an outage where the adapter knows its
  // connection was lost). Call it at most once. Never throws for
  // per-message failures.
  //
  // Destroying a PendingPublish without calling wait() abandons the batch:
  // late confirmations are ignored and the adapter's resources are released
  // (a connection with unread replies is closed, not reused).
  virtual std::vector<PublishResult> wait(std::chrono::steady_clock::time_point deadline) = 0;
};

class Publisher {
 public:
  virtual ~Publisher() = default;

  // Hands every message to the broker (all in flight at once) and returns
  // without waiting for the confirmations. `messages` must stay valid until
  // wait() has returned or the PendingPublish has been destroyed.
  // Thread-safe: several relay workers call it concurrently, and one worker
  // may have more than one batch in flight.
  //
  // Order: messages with the same key reach the broker in the given order,
  // and no message may be stored after an earlier message of the same key
  // in this batch failed transiently on the same connection (a client that
  // buffers messages during a reconnect and sends them afterwards breaks
  // this; so does a producer that times messages out while later ones go on).
  // A permanent failure removes that one message from the sequence.
  //
  // A message whose destination addresses the broker's own API or keys txbox
  // uses itself (NATS `$...` subjects, RabbitMQ `amq.` exchanges, Redis
  // `txbox:` keys, Kafka `__` topics) fails permanently without being sent.
  //
  // Throws BrokerError only when the publisher itself is unusable.
  virtual std::unique_ptr<PendingPublish> start(std::span<const Message> messages) = 0;

  // start() and wait() in one call.
  std::vector<PublishResult> publish(std::span<const Message> messages,
                                     std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    return start(messages)->wait(deadline);
  }

  // True when the publisher currently believes the broker is reachable
  // (cheap, no round trip).
  virtual bool healthy() const = 0;

  // Asks the broker for a sign of life with a real round trip, within
  // `timeout` (Kafka: a metadata request; NATS: the JetStream account
  // info; RabbitMQ: opening a channel on a connection that is not blocked;
  // Redis: PING). True when the broker as a whole answers and accepts work.
  // The relay calls it after a batch in which nothing was confirmed, to tell
  // a broker outage (no attempt counted) from failures of the messages
  // themselves. Never throws.
  virtual bool probe(std::chrono::milliseconds timeout) = 0;
};

// For adapters that take no client properties in some role: throws
// txbox::ConfigError naming the first one (`who`: "the NATS consumer").
void require_no_properties(std::string_view who, const Properties& properties);

// What a consumer reads, for brokers::open_consumer().
struct Subscription {
  // Kafka topic, RabbitMQ queue, NATS subject, Redis stream.
  std::string source;
  // Consumer group: Kafka group id, NATS durable name, Redis group (RabbitMQ:
  // unused, the queue is the group). Also a good inbox consumer name.
  std::string group;
  // Name of this member of the group where the broker has one (Redis);
  // empty = this host's name, stable across restarts, so a restarted
  // consumer first reads its own pending entries.
  std::string member{};
  // Client properties, as for publishers (Kafka: librdkafka properties).
  Properties properties{};
};

class Consumer {
 public:
  virtual ~Consumer() = default;

  // Waits up to `timeout` for the next message; nullopt on timeout.
  virtual std::optional<Delivery> poll(std::chrono::milliseconds timeout) = 0;

  // Acknowledges a message (and, for Kafka, every earlier one of its partition):
  // the broker will not deliver it again to this consumer group. Synchronous:
  // returns only once the broker accepted the ack; throws BrokerError otherwise.
  virtual void ack(const Delivery& delivery) = 0;

  // Acknowledges many deliveries in the broker's bulk form where it has one
  // (Kafka: the highest offset of each partition in one commit; Redis: one
  // XACK per stream); by default one ack() each. Kafka's commit is
  // cumulative: pass only deliveries whose partition has nothing unsettled
  // before them. Throws BrokerError like ack().
  virtual void ack_batch(std::span<const Delivery> deliveries) {
    for (const auto& delivery : deliveries) ack(delivery);
  }

  // Adapter-native dead-lettering of a message the consumer gives up on:
  // RabbitMQ rejects it to the queue's dead-letter exchange, NATS publishes
  // it to the dead-letter subject and terminates it, Redis adds it to the
  // dead-letter stream and acks it. Returns true once the broker took it
  // (the message is then settled; do not ack it). Returns false when the
  // adapter has no native mechanism (Kafka): the caller then publishes it to
  // "<source>.dlq" itself and acks. Throws BrokerError if the broker failed.
  virtual bool dead_letter(const Delivery& delivery, const std::string& reason) {
    (void)delivery;
    (void)reason;
    return false;
  }

  // Leaves the group cleanly. Idempotent; also done by the destructor.
  virtual void close() = 0;
};

}  // namespace txbox::brokers
