#pragma once
// Consuming from any supported broker, chosen by the URL scheme through the
// broker registry (txbox/registry/registry.hpp), as the relay chooses its
// publisher: kafka://, amqp://, nats://, redis://.

#include <memory>
#include <string>

#include "txbox/brokers/broker.hpp"

namespace txbox::consumer {

using Subscription = brokers::Subscription;

// brokers::open_consumer(broker_url, subscription). Throws txbox::UsageError
// for an unknown scheme or a malformed URL, and brokers::BrokerError when the
// broker rejects the subscription.
std::unique_ptr<brokers::Consumer> subscribe(const std::string& broker_url, const Subscription& subscription);

// Publisher for consumer-side dead letters where the broker's consumer does
// not dead-letter natively (Kafka: "<topic>.dlq"); nullptr where it does.
std::shared_ptr<brokers::Publisher> dead_letter_publisher(const std::string& broker_url);

}  // namespace txbox::consumer
