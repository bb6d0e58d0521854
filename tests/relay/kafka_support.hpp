#pragma once
// Reading back what the relay published, for the Kafka end-to-end tests.

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "support/test_env.hpp"
#include "txbox/kafka/kafka.hpp"
#include "txbox/relay/relay.hpp"

namespace txbox::test {

inline relay::RelayOptions kafka_relay_options(const std::string& database_url) {
  relay::RelayOptions options;
  options.database_url = database_url;
  options.broker_url = "kafka://" + kafka_bootstrap();
  options.drain = true;
  options.poll_interval = std::chrono::milliseconds(20);
  return options;
}

// Reads `topic` from the beginning with a fresh consumer group until `count`
// messages arrived, or nothing new came for `quiet` after the deadline.
inline std::vector<brokers::Delivery> consume_topic(const std::string& topic, size_t count,
                                                    std::chrono::seconds timeout = std::chrono::seconds(120)) {
  kafka::ConsumerOptions options;
  options.bootstrap_servers = kafka_bootstrap();
  options.group_id = unique_name("group");
  options.topics = {topic};
  auto consumer = kafka::make_consumer(options);
  std::vector<brokers::Delivery> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    if (auto delivery = consumer->poll(std::chrono::milliseconds(200))) out.push_back(std::move(*delivery));
  }
  // Anything beyond `count` (duplicates) that is already there.
  while (auto delivery = consumer->poll(std::chrono::milliseconds(500))) out.push_back(std::move(*delivery));
  consumer->close();
  return out;
}

inline std::string header(const brokers::Message& message, const std::string& name) {
  for (const auto& [k, v] : message.headers)
    if (k == name) return v;
  return {};
}

}  // namespace txbox::test
