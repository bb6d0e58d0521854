#pragma once
// One way to consume from any supported broker, chosen by the URL scheme, as
// the relay chooses its publisher: kafka://, amqp://, nats://, redis://.

#include <memory>
#include <string>

#include "txbox/brokers/broker.hpp"

namespace txbox::consumer {

struct Subscription {
  // What to read: Kafka topic, RabbitMQ queue, NATS subject, Redis stream.
  std::string source;
  // Consumer group (Kafka group id, NATS durable, Redis group). Also a good
  // inbox consumer name.
  std::string group;
};

// Throws std::invalid_argument for an unknown scheme or a malformed URL, and
// brokers::BrokerError when the broker rejects the subscription.
std::unique_ptr<brokers::Consumer> subscribe(const std::string& broker_url, const Subscription& subscription);

// Publisher for consumer-side dead letters (Kafka: "<topic>.dlq"); nullptr
// where the broker dead-letters natively.
std::shared_ptr<brokers::Publisher> dead_letter_publisher(const std::string& broker_url);

}  // namespace txbox::consumer
