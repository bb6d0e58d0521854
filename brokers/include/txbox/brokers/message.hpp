#pragma once
// Broker-neutral message types shared by the relay (publishing) and the
// consumers (subscribing). Adapters translate these to their wire format.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace txbox::brokers {

using Headers = std::vector<std::pair<std::string, std::string>>;

// One message as it leaves the outbox or arrives from a broker.
struct Message {
  std::string message_id;          // UUID text; also sent as the `message-id` header
  std::string destination;         // Kafka topic, AMQP exchange/routing key, subject, stream
  std::optional<std::string> key;  // partition / ordering key; nullopt = no key
  std::string payload;             // raw bytes
  Headers headers;                 // string -> string, in insertion order
};

// How a failure should be handled by whoever retries.
enum class ErrorClass {
  transient,  // timeout, leader not available, a nack: retry later with backoff
  permanent,  // too large, unknown destination, not authorized: dead-letter at once
  outage,     // the broker as a whole is unreachable (connection down, all
              // brokers down, connection blocked): retry once it is back
};

const char* to_string(ErrorClass error_class) noexcept;

// Per-message outcome of a publish.
struct PublishResult {
  bool confirmed = false;  // the broker acknowledged durable receipt
  ErrorClass error_class = ErrorClass::transient;
  std::string error;  // human-readable reason when !confirmed
};

// A message received by a consumer, with the broker position needed to ack it.
struct Delivery {
  Message message;
  std::string source;     // topic / queue / stream the message came from
  int32_t partition = 0;  // Kafka partition (0 where the broker has none)
  int64_t offset = 0;     // Kafka offset, or broker delivery sequence
  std::string ack_token;  // adapter-specific (delivery tag, stream entry id, ...)
  // How many times the broker has delivered this message, this time
  // included, where the broker tracks it (NATS num_delivered, Redis
  // delivery count, RabbitMQ: 2 when redelivered); 1 otherwise.
  int delivery_attempt = 1;
};

}  // namespace txbox::brokers
