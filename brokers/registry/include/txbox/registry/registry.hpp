#pragma once
// One place maps a broker URL's scheme to an adapter:
//   kafka://   txbox::kafka     (librdkafka)
//   amqp://    txbox::rabbitmq  (rabbitmq-c)
//   nats://    txbox::nats      (cnats, JetStream)
//   redis://   txbox::redis     (hiredis, Streams)
// Adding a broker: its folder under brokers/ with make_publisher(BrokerUrl,
// Properties) and make_consumer(BrokerUrl, Subscription), and one line in
// registry.cpp.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/brokers/broker.hpp"

namespace txbox::brokers {

// A publisher for `url`, with client properties passed to the adapter
// (Kafka: librdkafka properties; the others reject properties they do not
// know). Throws txbox::UsageError for a malformed URL or an unknown scheme
// (naming the supported ones), and BrokerError/ConfigError from the adapter.
std::unique_ptr<Publisher> open_publisher(std::string_view url, const Properties& properties = {});

// A consumer of subscription.source at `url`; throws as open_publisher().
std::unique_ptr<Consumer> open_consumer(std::string_view url, const Subscription& subscription);

// Parses `url` and checks that its scheme has an adapter, without
// connecting; throws txbox::UsageError.
void check_broker_url(std::string_view url);

// True when the broker's consumers dead-letter on their own
// (Consumer::dead_letter() returns true: RabbitMQ, NATS, Redis); false when
// the caller must publish dead letters itself (Kafka: "<topic>.dlq").
bool dead_letters_natively(std::string_view url);

// The schemes with an adapter, as "scheme://form" lines for help texts.
std::vector<std::string> supported_broker_urls();

}  // namespace txbox::brokers
