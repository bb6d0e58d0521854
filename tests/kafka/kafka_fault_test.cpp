// Kafka adapter fault tests: each test runs its own mock cluster process
// (txbox::test::KafkaMock) and injects faults through its control FIFO, or
// kills and restarts it, then checks what the publisher reports. The rule
// under test: a message is reported confirmed only if the broker has it;
// anything unknown at the publish timeout is a transient failure.

#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/kafka_mock.hpp"
#include "support/test_env.hpp"
#include "txbox/kafka/kafka.hpp"

using namespace std::chrono_literals;
using txbox::brokers::Delivery;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;
using txbox::brokers::PublishResult;
using txbox::test::KafkaMock;
using Clock = std::chrono::steady_clock;
namespace kafka = txbox::kafka;

namespace {

kafka::ProducerOptions producer_options(const KafkaMock& mock,
                                        std::chrono::milliseconds message_timeout = 30000ms) {
  kafka::ProducerOptions options;
  options.bootstrap_servers = mock.bootstrap();
  options.message_timeout = message_timeout;
  // Reconnect quickly after the mock comes back (defaults: 100 ms .. 10 s).
  options.properties["reconnect.backoff.max.ms"] = "500";
  return options;
}

std::vector<Message> make_messages(const std::string& topic, const std::string& tag, int count,
                                   bool keyed = false) {
  std::vector<Message> out;
  for (int i = 0; i < count; ++i) {
    Message m;
    m.message_id = tag + "-" + std::to_string(i);
    m.destination = topic;
    if (keyed) m.key = "key-" + std::to_string(i);
    m.payload = "payload-" + std::to_string(i);
    out.push_back(std::move(m));
  }
  return out;
}

// Every message confirmed or failed; returns the ids reported confirmed.
std::set<std::string> confirmed_ids(const std::vector<Message>& messages,
                                    const std::vector<PublishResult>& results) {
  REQUIRE(results.size() == messages.size());
  std::set<std::string> out;
  for (std::size_t i = 0; i < results.size(); ++i)
    if (results[i].confirmed) out.insert(messages[i].message_id);
  return out;
}

void require_transient_failures(const std::vector<PublishResult>& results) {
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    REQUIRE_FALSE(results[i].confirmed);
    REQUIRE(results[i].error_class == ErrorClass::transient);
    REQUIRE_FALSE(results[i].error.empty());
  }
}

void require_all_confirmed(const std::vector<PublishResult>& results) {
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    REQUIRE(results[i].confirmed);
  }
}

// Message ids in `topic` (from the beginning), polling until `expected` are
// all seen or `within` passed.
std::multiset<std::string> consume_ids(const KafkaMock& mock, const std::string& topic,
                                       const std::set<std::string>& expected,
                                       std::chrono::seconds within = 20s) {
  kafka::ConsumerOptions options;
  options.bootstrap_servers = mock.bootstrap();
  options.group_id = txbox::test::unique_name("fault_group");
  options.topics = {topic};
  auto consumer = kafka::make_consumer(options);
  std::multiset<std::string> seen;
  const auto all_seen = [&] {
    for (const auto& id : expected)
      if (!seen.contains(id)) return false;
    return true;
  };
  const auto deadline = Clock::now() + within;
  while (Clock::now() < deadline && !all_seen())
    if (auto d = consumer->poll(200ms)) seen.insert(d->message.message_id);
  // A little longer, to catch unexpected extra messages too.
  const auto extra = Clock::now() + 1s;
  while (Clock::now() < extra)
    if (auto d = consumer->poll(100ms)) seen.insert(d->message.message_id);
  consumer->close();
  return seen;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds within, std::chrono::milliseconds* took = nullptr) {
  const auto start = Clock::now();
  while (Clock::now() - start < within) {
    if (pred()) {
      if (took) *took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

// Records when healthy() first turns false after start (polled every 10 ms).
class HealthWatch {
 public:
  explicit HealthWatch(const txbox::brokers::Publisher& publisher)
      : start_(Clock::now()), thread_([this, &publisher] {
          while (!stop_.load()) {
            if (!publisher.healthy()) {
              unhealthy_after_.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         Clock::now() - start_)
                                         .count());
              return;
            }
            std::this_thread::sleep_for(10ms);
          }
        }) {}
  ~HealthWatch() {
    stop_.store(true);
    thread_.join();
  }
  // Milliseconds from construction to the first healthy() == false, or -1.
  long long unhealthy_after() const { return unhealthy_after_.load(); }

 private:
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::atomic<long long> unhealthy_after_{-1};
  std::thread thread_;
};

// Publishes fresh batches until one is fully confirmed (the cluster has
// recovered) or `within` passed; returns the confirmed batch's ids.
std::set<std::string> publish_until_confirmed(txbox::brokers::Publisher& publisher,
                                              const std::string& topic, const std::string& tag,
                                              std::chrono::seconds within) {
  const auto deadline = Clock::now() + within;
  for (int attempt = 0; Clock::now() < deadline; ++attempt) {
    auto batch = make_messages(topic, tag + "-" + std::to_string(attempt), 5);
    auto results = publisher.publish(batch, 3s);
    bool all = true;
    for (const auto& r : results) {
      REQUIRE(r.error_class == ErrorClass::transient);
      all = all && r.confirmed;
    }
    if (all) return confirmed_ids(batch, results);
  }
  FAIL("the publisher did not recover within " << within.count() << " s");
  return {};
}

}  // namespace

TEST_CASE("transient Produce errors are retried by librdkafka and only delivered messages are confirmed",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = txbox::test::unique_name("fault_transient");
  mock.control("topic-create " + topic + " 1 1");
  auto publisher = kafka::make_publisher(producer_options(mock));
  mock.control("push-errors Produce NOT_ENOUGH_REPLICAS NOT_ENOUGH_REPLICAS NOT_ENOUGH_REPLICAS");

  const auto messages = make_messages(topic, "tr", 20);
  const auto results = publisher->publish(messages, 15s);
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    REQUIRE((results[i].confirmed || results[i].error_class == ErrorClass::transient));
  }
  const auto confirmed = confirmed_ids(messages, results);
  CHECK(confirmed.size() == messages.size());  // librdkafka retried them all

  const auto seen = consume_ids(mock, topic, confirmed);
  for (const auto& id : confirmed) {
    INFO("confirmed but not in the topic: " << id);
    REQUIRE(seen.contains(id));
  }
  for (const auto& id : seen) CHECK(seen.count(id) == 1);  // idempotent: no duplicates
}

TEST_CASE("TOPIC_AUTHORIZATION_FAILED on Produce fails the batch permanently with a clear error",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = txbox::test::unique_name("fault_auth");
  mock.control("topic-create " + topic + " 1 1");
  auto publisher = kafka::make_publisher(producer_options(mock));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 1), 10s));

  mock.control("push-errors Produce TOPIC_AUTHORIZATION_FAILED");
  const auto messages = make_messages(topic, "auth", 5);
  const auto results = publisher->publish(messages, 10s);
  REQUIRE(results.size() == messages.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    REQUIRE_FALSE(results[i].confirmed);
    REQUIRE(results[i].error_class == ErrorClass::permanent);
    REQUIRE_THAT(results[i].error, Catch::Contains("not authorized to write to topic '" + topic + "'") &&
                                       Catch::Contains("TOPIC_AUTHORIZATION_FAILED"));
  }
  // The producer stays usable (no fatal idempotence error) once the error is gone.
  std::vector<PublishResult> after;
  std::chrono::milliseconds took{};
  int attempts = 0;
  const bool recovered = eventually(
      [&] {
        after = publisher->publish(make_messages(topic, "after", 3), 10s);
        if (attempts++ == 0 && !after[0].confirmed)
          WARN("first publish after the error: " << to_string(after[0].error_class) << ": "
                                                  << after[0].error);
        for (const auto& r : after)
          if (!r.confirmed) return false;
        return true;
      },
      60s, &took);
  INFO("last error: " << after[0].error);
  REQUIRE(recovered);
  WARN("publishes to the topic confirmed again after " << took.count() << " ms, attempt "
                                                       << attempts);
  CHECK(publisher->healthy());
}

TEST_CASE("a leaderless partition times out transiently while other partitions confirm",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = txbox::test::unique_name("fault_leader");
  mock.control("topic-create " + topic + " 2 1");
  mock.control("partition-leader " + topic + " 0 -1");
  auto publisher = kafka::make_publisher(producer_options(mock, 2000ms));

  const auto messages = make_messages(topic, "ld", 20, /*keyed=*/true);
  int on_partition0 = 0;
  const auto start = Clock::now();
  const auto results = publisher->publish(messages, 10s);
  const auto took = Clock::now() - start;
  REQUIRE(results.size() == messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const int32_t partition = kafka::murmur2_partition(*messages[i].key, 2);
    INFO("message " << i << " on partition " << partition << ": " << results[i].error);
    if (partition == 0) {
      ++on_partition0;
      REQUIRE_FALSE(results[i].confirmed);
      REQUIRE(results[i].error_class == ErrorClass::transient);
      REQUIRE_THAT(results[i].error, Catch::Contains("message.timeout.ms"));
    } else {
      REQUIRE(results[i].confirmed);
    }
  }
  REQUIRE(on_partition0 > 0);
  REQUIRE(on_partition0 < static_cast<int>(messages.size()));
  CHECK(took < 6s);  // failed at message.timeout.ms (2 s), not at the publish timeout
  CHECK(publisher->healthy());  // the broker is reachable: only a partition is impaired

  // Leader back: the same keys are confirmed again.
  mock.control("partition-leader " + topic + " 0 1");
  std::vector<PublishResult> again;
  REQUIRE(eventually(
      [&] {
        again = publisher->publish(make_messages(topic, "ld-again", 20, true), 5s);
        for (const auto& r : again)
          if (!r.confirmed) return false;
        return true;
      },
      20s));
}

TEST_CASE("a killed broker fails publishes transiently and they recover after a restart on the same ports",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = txbox::test::unique_name("fault_kill");
  auto publisher = kafka::make_publisher(producer_options(mock, 10000ms));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 5), 10s));
  REQUIRE(publisher->healthy());

  // Kill mid-publish: responses are delayed, so the batch is in flight.
  mock.control("rtt 1 1000");
  const auto in_flight = make_messages(topic, "inflight", 10);
  auto pending = std::async(std::launch::async, [&] { return publisher->publish(in_flight, 3s); });
  std::this_thread::sleep_for(300ms);
  HealthWatch watch(*publisher);
  mock.kill();
  const auto start = Clock::now();
  const auto results = pending.get();
  CHECK(Clock::now() - start < 4s);
  require_transient_failures(results);

  // While down: prompt transient failures, and healthy() turns false.
  const auto down_start = Clock::now();
  require_transient_failures(publisher->publish(make_messages(topic, "down", 5), 1s));
  CHECK(Clock::now() - down_start < 2s);
  REQUIRE(eventually([&] { return !publisher->healthy(); }, 15s));
  WARN("healthy() turned false " << watch.unhealthy_after() << " ms after the kill");

  mock.restart();
  const auto restarted = Clock::now();
  const auto recovered = publish_until_confirmed(*publisher, topic, "after", 30s);
  WARN("a batch was confirmed again "
       << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted).count()
       << " ms after the restart");
  REQUIRE(eventually([&] { return publisher->healthy(); }, 5s));

  const auto seen = consume_ids(mock, topic, recovered);
  for (const auto& id : recovered) {
    INFO("confirmed but not in the topic: " << id);
    REQUIRE(seen.contains(id));
  }
}

TEST_CASE("all brokers down: publish returns within its timeout with transient failures and all-up recovers",
          "[kafka][fault]") {
  KafkaMock mock(2);
  const std::string topic = txbox::test::unique_name("fault_alldown");
  mock.control("topic-create " + topic + " 2 2");
  auto publisher = kafka::make_publisher(producer_options(mock, 30000ms));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 5), 10s));

  HealthWatch watch(*publisher);
  mock.control("all-down");
  const auto start = Clock::now();
  const auto results = publisher->publish(make_messages(topic, "down", 10), 2s);
  const auto took = Clock::now() - start;
  require_transient_failures(results);
  CHECK(took >= 1900ms);
  CHECK(took < 3s);
  for (const auto& r : results) CHECK_THAT(r.error, Catch::Contains("publish timeout of 2000 ms"));
  REQUIRE(eventually([&] { return !publisher->healthy(); }, 15s));
  WARN("healthy() turned false " << watch.unhealthy_after() << " ms after all-down");

  mock.control("all-up");
  const auto up = Clock::now();
  const auto recovered = publish_until_confirmed(*publisher, topic, "up", 30s);
  WARN("a batch was confirmed again "
       << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - up).count()
       << " ms after all-up");
  REQUIRE(eventually([&] { return publisher->healthy(); }, 5s));
  const auto seen = consume_ids(mock, topic, recovered);
  for (const auto& id : recovered) {
    INFO("confirmed but not in the topic: " << id);
    REQUIRE(seen.contains(id));
  }
}
