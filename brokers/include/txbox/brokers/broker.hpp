#pragma once
// The one interface every broker adapter implements.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "txbox/brokers/message.hpp"

namespace txbox::brokers {

// Thrown for setup failures (bad URL, bad property, cannot create client).
// `retryable` tells the caller whether trying again later can help.
class BrokerError : public std::runtime_error {
 public:
  BrokerError(const std::string& what, bool retryable)
      : std::runtime_error(what), retryable_(retryable) {}
  bool retryable() const noexcept { return retryable_; }

 private:
  bool retryable_;
};

// Extra client properties passed through verbatim to the underlying client
// library (for Kafka: librdkafka configuration properties).
using Properties = std::map<std::string, std::string>;

class Publisher {
 public:
  virtual ~Publisher() = default;

  // Publishes every message asynchronously (all in flight at once) and blocks
  // until each one has an outcome: confirmed by the broker, or failed.
  // Messages whose outcome is not known when `timeout` expires are reported as
  // transient failures. The result has one entry per message, in order.
  // Thread-safe: several relay workers call it concurrently.
  // Must never throw for per-message failures; throws BrokerError only when
  // the publisher itself is unusable.
  virtual std::vector<PublishResult> publish(std::span<const Message> messages,
                                             std::chrono::milliseconds timeout) = 0;

  // True when the publisher currently believes the broker is reachable.
  virtual bool healthy() const = 0;
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
