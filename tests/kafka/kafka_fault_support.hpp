#pragma once
// Shared by the Kafka adapter's fault tests (kafka_fault_test.cpp,
// kafka_recovery_fault_test.cpp): messages, reading a topic back, and the
// per-key "no gap" check.

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/kafka_mock.hpp"
#include "support/test_env.hpp"
#include "txbox/kafka/kafka.hpp"

namespace txbox::test::kafka_faults {

using namespace std::chrono_literals;
using brokers::Delivery;
using brokers::ErrorClass;
using brokers::Message;
using brokers::PublishResult;
using Clock = std::chrono::steady_clock;

// txbox's defaults, plus a quick reconnect after the mock comes back
// (librdkafka's defaults: 100 ms .. 10 s).
inline kafka::ProducerOptions producer_options(const KafkaMock& mock) {
  kafka::ProducerOptions options;
  options.bootstrap_servers = mock.bootstrap();
  options.properties["reconnect.backoff.max.ms"] = "500";
  return options;
}

// A topic of its own on `mock`, named unique_name(prefix).
inline std::string create_topic(KafkaMock& mock, const std::string& prefix, int partitions, int replication) {
  const std::string topic = unique_name(prefix);
  mock.control("topic-create " + topic + " " + std::to_string(partitions) + " " + std::to_string(replication));
  return topic;
}

// `count` messages tag-0 .. tag-N; with `keys` > 0, message i has key
// "key-(i % keys)".
inline std::vector<Message> make_messages(const std::string& topic, const std::string& tag,
                                          int count, int keys = 0) {
  std::vector<Message> out;
  for (int i = 0; i < count; ++i) {
    Message m;
    m.message_id = tag + "-" + std::to_string(i);
    m.destination = topic;
    if (keys > 0) m.key = "key-" + std::to_string(i % keys);
    m.payload = "payload-" + std::to_string(i);
    out.push_back(std::move(m));
  }
  return out;
}

inline std::set<std::string> ids_of(const std::vector<Message>& messages) {
  std::set<std::string> out;
  for (const auto& m : messages) out.insert(m.message_id);
  return out;
}

// Every message confirmed or failed; returns the ids reported confirmed.
inline std::set<std::string> confirmed_ids(const std::vector<Message>& messages,
                                           const std::vector<PublishResult>& results) {
  REQUIRE(results.size() == messages.size());
  std::set<std::string> out;
  for (std::size_t i = 0; i < results.size(); ++i)
    if (results[i].confirmed) out.insert(messages[i].message_id);
  return out;
}

// Not confirmed, and retryable (transient or outage), with a reason.
inline void require_retryable_failures(const std::vector<PublishResult>& results) {
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << to_string(results[i].error_class) << ": " << results[i].error);
    REQUIRE_FALSE(results[i].confirmed);
    REQUIRE(results[i].error_class != ErrorClass::permanent);
    REQUIRE_FALSE(results[i].error.empty());
  }
}

inline void require_all_confirmed(const std::vector<PublishResult>& results) {
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    REQUIRE(results[i].confirmed);
  }
}

// A publisher that sends a whole batch as one MessageSet (linger.ms 200, as
// under load), so that one injected error hits all of it; it has published
// one message to `topic` already (connection and metadata in place).
inline std::unique_ptr<brokers::Publisher> one_message_set_publisher(const KafkaMock& mock,
                                                                     const std::string& topic) {
  auto options = producer_options(mock);
  options.properties["linger.ms"] = "200";
  auto publisher = kafka::make_publisher(options);
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 1), 10s));
  return publisher;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds within,
                std::chrono::milliseconds* took = nullptr) {
  const auto start = Clock::now();
  while (Clock::now() - start < within) {
    if (pred()) {
      if (took)
        *took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

// Everything in `topic` from the beginning, in the order the consumer got it
// (per partition: log order), polling until every id of `expected` was seen
// or `within` passed, and a little longer to catch unexpected extra copies.
inline std::vector<Delivery> consume_all(const KafkaMock& mock, const std::string& topic,
                                         const std::set<std::string>& expected,
                                         std::chrono::seconds within = 30s) {
  kafka::ConsumerOptions options;
  options.bootstrap_servers = mock.bootstrap();
  options.group_id = unique_name("fault_group");
  options.topics = {topic};
  auto consumer = kafka::make_consumer(options);
  std::vector<Delivery> out;
  std::set<std::string> seen;
  const auto all_seen = [&] {
    for (const auto& id : expected)
      if (!seen.contains(id)) return false;
    return true;
  };
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline && !all_seen()) {
    if (auto d = consumer->poll(200ms)) {
      seen.insert(d->message.message_id);
      out.push_back(std::move(*d));
    }
  }
  const auto extra = Clock::now() + 1500ms;
  while (Clock::now() < extra) {
    if (auto d = consumer->poll(100ms)) out.push_back(std::move(*d));
  }
  consumer->close();
  return out;
}

inline std::map<std::string, int> copies_by_id(const std::vector<Delivery>& deliveries) {
  std::map<std::string, int> out;
  for (const auto& d : deliveries) ++out[d.message.message_id];
  return out;
}

// The "no gap" rule, per key: in the topic, the first occurrences of a key's
// messages are in publish order, and a message is present only if every
// earlier message of its key is present too (except those reported as
// failed permanently: they left the sequence). `published` is the publish
// order of every message (each id once).
inline void require_no_gaps(const std::vector<Message>& published,
                            const std::set<std::string>& permanently_failed,
                            const std::vector<Delivery>& deliveries) {
  std::map<std::string, std::vector<std::string>> expected_by_key;
  for (const auto& m : published) {
    REQUIRE(m.key.has_value());
    if (!permanently_failed.contains(m.message_id)) expected_by_key[*m.key].push_back(m.message_id);
  }
  std::set<std::string> published_ids;
  for (const auto& m : published) published_ids.insert(m.message_id);
  std::map<std::string, std::vector<std::string>> first_seen_by_key;
  std::set<std::string> seen;
  for (const auto& d : deliveries) {
    if (!published_ids.contains(d.message.message_id)) continue;  // e.g. a warm-up message
    if (!seen.insert(d.message.message_id).second) continue;
    REQUIRE(d.message.key.has_value());
    first_seen_by_key[*d.message.key].push_back(d.message.message_id);
  }
  for (const auto& [key, expected] : expected_by_key) {
    const auto& got = first_seen_by_key[key];
    INFO("key " << key << ": " << got.size() << " of " << expected.size() << " messages present");
    // A prefix of the publish order: nothing after a missing message.
    REQUIRE(got.size() <= expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      INFO("position " << i);
      REQUIRE(got[i] == expected[i]);
    }
  }
}

}  // namespace txbox::test::kafka_faults

namespace txbox::test::kafka_faults {

struct StreamReport {
  std::set<std::string> permanently_failed;
  int rounds = 0;
  int rounds_with_failures = 0;
  bool finished = false;
};

// Publishes `messages` the way the relay does: each round takes the first
// `batch_size` messages not yet done, in publish order, publishes them with
// `timeout`, and per key drops the confirmed prefix (a permanent failure
// leaves the sequence too); a message that failed holds back the later
// messages of its key, which go again after it even if they were confirmed.
// `between_rounds(round)` runs before each round. Stops when everything is
// done or at `give_up`.
template <typename BetweenRounds>
StreamReport publish_like_the_relay(brokers::Publisher& publisher,
                                    const std::vector<Message>& messages, std::size_t batch_size,
                                    std::chrono::milliseconds timeout, Clock::time_point give_up,
                                    BetweenRounds between_rounds) {
  StreamReport report;
  std::vector<std::size_t> pending(messages.size());
  for (std::size_t i = 0; i < pending.size(); ++i) pending[i] = i;
  while (!pending.empty() && Clock::now() < give_up) {
    between_rounds(report.rounds);
    ++report.rounds;
    const std::size_t n = std::min(batch_size, pending.size());
    std::vector<Message> batch;
    for (std::size_t j = 0; j < n; ++j) batch.push_back(messages[pending[j]]);
    const auto results = publisher.publish(batch, timeout);
    REQUIRE(results.size() == batch.size());
    std::set<std::string> blocked_keys;
    std::vector<std::size_t> still;
    bool failures = false;
    for (std::size_t j = 0; j < n; ++j) {
      const Message& m = batch[j];
      const bool blocked = m.key && blocked_keys.contains(*m.key);
      if (!blocked && results[j].confirmed) continue;
      if (!blocked && results[j].error_class == ErrorClass::permanent) {
        report.permanently_failed.insert(m.message_id);
        continue;
      }
      if (!results[j].confirmed) failures = true;
      if (m.key) blocked_keys.insert(*m.key);
      still.push_back(pending[j]);
    }
    if (failures) ++report.rounds_with_failures;
    still.insert(still.end(), pending.begin() + static_cast<std::ptrdiff_t>(n), pending.end());
    pending = std::move(still);
  }
  report.finished = pending.empty();
  return report;
}

}  // namespace txbox::test::kafka_faults
