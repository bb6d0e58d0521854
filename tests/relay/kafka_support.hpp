#pragma once
// Reading back what the relay published, for the Kafka end-to-end tests.

#include <chrono>
#include <map>
#include <set>
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
// distinct messages (by message id) arrived or `timeout` passed, then what
// else is already there. Counting distinct ids: a relay that retries after
// a failed delete publishes some messages twice (at-least-once), and those
// duplicates must not end the wait before every message is in.
inline std::vector<brokers::Delivery> consume_topic(const std::string& topic, size_t count,
                                                    std::chrono::seconds timeout = std::chrono::seconds(120)) {
  kafka::ConsumerOptions options;
  options.bootstrap_servers = kafka_bootstrap();
  options.group_id = unique_name("group");
  options.topics = {topic};
  auto consumer = kafka::make_consumer(options);
  std::vector<brokers::Delivery> out;
  std::set<std::string> ids;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (ids.size() < count && std::chrono::steady_clock::now() < deadline) {
    if (auto delivery = consumer->poll(std::chrono::milliseconds(200))) {
      ids.insert(delivery->message.message_id);
      out.push_back(std::move(*delivery));
    }
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
