// Kafka adapter fault tests: each test runs its own mock cluster process
// (txbox::test::KafkaMock) and injects faults through its control FIFO, or
// kills and restarts it, then checks what the publisher reports and what the
// topic holds afterwards. The rules under test: a message is reported
// confirmed only if the broker has it; anything unknown at the deadline is a
// retryable failure (transient, or outage when all brokers are down); a
// message that did not get through stays queued in its place, a
// re-publication of it waits for that copy instead of sending another, and
// per key no later message is ever stored after an earlier one is missing.

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kafka_fault_support.hpp"

using namespace std::chrono_literals;
using namespace txbox::test::kafka_faults;
using txbox::test::KafkaMock;
namespace kafka = txbox::kafka;

namespace {

// Records when healthy() first turns false after start (polled every 10 ms).
class HealthWatch {
 public:
  explicit HealthWatch(const txbox::brokers::Publisher& publisher)
      : start_(Clock::now()), thread_([this, &publisher] {
          while (!stop_.load()) {
            if (!publisher.healthy()) {
              unhealthy_after_.store(
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_)
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
      INFO(r.error);
      REQUIRE(r.error_class != ErrorClass::permanent);
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
  const std::string topic = create_topic(mock, "fault_transient", 1, 1);
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

  const auto copies = copies_by_id(consume_all(mock, topic, confirmed));
  for (const auto& id : confirmed) {
    INFO("confirmed but not in the topic: " << id);
    REQUIRE(copies.contains(id));
  }
  for (const auto& [id, n] : copies) {
    INFO(id);
    CHECK(n == 1);  // idempotent: no duplicates
  }
}

TEST_CASE("TOPIC_AUTHORIZATION_FAILED on Produce: the rejected messages fail permanently, the "
          "producer is recreated and publishes again",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = create_topic(mock, "fault_auth", 1, 1);
  auto publisher = one_message_set_publisher(mock, topic);

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
  // The gapless guarantee made the error fatal; the publisher replaced its
  // producer and publishes again.
  std::vector<PublishResult> after;
  std::chrono::milliseconds took{};
  int attempts = 0;
  const auto after_messages = make_messages(topic, "after", 3);
  const bool recovered = eventually(
      [&] {
        after = publisher->publish(after_messages, 10s);
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
  const auto copies = copies_by_id(consume_all(mock, topic, ids_of(after_messages)));
  for (const auto& m : messages) CHECK_FALSE(copies.contains(m.message_id));
  for (const auto& m : after_messages) CHECK(copies.contains(m.message_id));
}

TEST_CASE("a leaderless partition: probe() is true, its messages fail transiently and stay "
          "queued, and are stored once when the leader is back",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = create_topic(mock, "fault_leader", 2, 1);
  mock.control("partition-leader " + topic + " 0 -1");
  auto publisher = kafka::make_publisher(producer_options(mock));

  const auto messages = make_messages(topic, "ld", 20, /*keys=*/20);
  int on_partition0 = 0;
  const auto start = Clock::now();
  const auto results = publisher->publish(messages, 3s);
  const auto took = Clock::now() - start;
  REQUIRE(results.size() == messages.size());
  std::vector<Message> failed;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const int32_t partition = kafka::murmur2_partition(*messages[i].key, 2);
    INFO("message " << i << " on partition " << partition << ": " << results[i].error);
    if (partition == 0) {
      ++on_partition0;
      REQUIRE_FALSE(results[i].confirmed);
      REQUIRE(results[i].error_class == ErrorClass::transient);
      REQUIRE_THAT(results[i].error, Catch::Contains("no delivery report") &&
                                         Catch::Contains("stays queued"));
      failed.push_back(messages[i]);
    } else {
      REQUIRE(results[i].confirmed);
    }
  }
  REQUIRE(on_partition0 > 0);
  REQUIRE(on_partition0 < static_cast<int>(messages.size()));
  CHECK(took >= 2900ms);        // waited for the deadline ...
  CHECK(took < 10s);            // ... and not much longer
  CHECK(publisher->probe(5s));  // the cluster answers: only a partition is impaired
  CHECK(publisher->healthy());

  // While leaderless, the relay would publish them again: still no report,
  // and still no second copy.
  const auto again = publisher->publish(failed, 1s);
  require_retryable_failures(again);

  // Published once more while still leaderless (attached to the queued
  // copies), then the leader comes back: the queued copies go out and their
  // reports confirm this batch. (Published only after they went out, the
  // messages would be stored again: a duplicate the inbox removes.)
  auto pending = publisher->start(failed);
  mock.control("partition-leader " + topic + " 0 1");
  require_all_confirmed(pending->wait(Clock::now() + 60s));
  const auto copies = copies_by_id(consume_all(mock, topic, ids_of(messages)));
  for (const auto& m : messages) {
    INFO(m.message_id);
    REQUIRE(copies.contains(m.message_id));
    CHECK(copies.at(m.message_id) == 1);  // attached, not re-sent
  }
}

TEST_CASE("a killed cluster fails publishes retryably and they recover after a restart on the "
          "same ports",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = txbox::test::unique_name("fault_kill");
  auto publisher = kafka::make_publisher(producer_options(mock));
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
  require_retryable_failures(results);

  // While down: prompt retryable failures, healthy() turns false and probe()
  // says no within its timeout.
  const auto down_start = Clock::now();
  require_retryable_failures(publisher->publish(make_messages(topic, "down", 5), 1s));
  CHECK(Clock::now() - down_start < 3s);
  REQUIRE(eventually([&] { return !publisher->healthy(); }, 15s));
  WARN("healthy() turned false " << watch.unhealthy_after() << " ms after the kill");
  const auto probe_start = Clock::now();
  CHECK_FALSE(publisher->probe(1s));
  CHECK(Clock::now() - probe_start < 4s);

  mock.restart();
  const auto restarted = Clock::now();
  const auto recovered = publish_until_confirmed(*publisher, topic, "after", 60s);
  WARN("a batch was confirmed again "
       << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - restarted).count()
       << " ms after the restart");
  REQUIRE(eventually([&] { return publisher->healthy(); }, 5s));
  CHECK(publisher->probe(5s));

  const auto copies = copies_by_id(consume_all(mock, topic, recovered));
  for (const auto& id : recovered) {
    INFO("confirmed but not in the topic: " << id);
    REQUIRE(copies.contains(id));
  }
}

TEST_CASE("all brokers down: wait() fails within its deadline, probe() is false, and after "
          "all-up the queued messages are stored exactly once and in order",
          "[kafka][fault]") {
  KafkaMock mock(2);
  const std::string topic = create_topic(mock, "fault_alldown", 2, 2);
  auto publisher = kafka::make_publisher(producer_options(mock));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 5), 10s));

  HealthWatch watch(*publisher);
  mock.control("all-down");
  const auto messages = make_messages(topic, "down", 30, /*keys=*/3);
  const auto start = Clock::now();
  const auto results = publisher->publish(messages, 2s);
  const auto took = Clock::now() - start;
  require_retryable_failures(results);  // the fault struck: nothing got through
  CHECK(took >= 1900ms);
  CHECK(took < 5s);
  for (const auto& r : results) CHECK_THAT(r.error, Catch::Contains("publish timeout of 2000 ms"));
  REQUIRE(eventually([&] { return !publisher->healthy(); }, 15s));
  WARN("healthy() turned false " << watch.unhealthy_after() << " ms after all-down");
  const auto probe_start = Clock::now();
  CHECK_FALSE(publisher->probe(1s));
  CHECK(Clock::now() - probe_start < 4s);

  // The relay publishes the same rows again while the cluster is down: an
  // outage now, and the messages wait in their queued copies (no new ones).
  for (int round = 0; round < 3; ++round) {
    const auto again = publisher->publish(messages, 500ms);
    REQUIRE(again.size() == messages.size());
    for (const auto& r : again) {
      INFO(r.error);
      REQUIRE_FALSE(r.confirmed);
      REQUIRE(r.error_class == ErrorClass::outage);
      REQUIRE_THAT(r.error, Catch::Contains("all brokers are unreachable"));
    }
  }

  // Published once more, then the cluster comes back: the queued copies go
  // out and their reports confirm this batch.
  auto pending = publisher->start(messages);
  mock.control("all-up");
  const auto up = Clock::now();
  require_all_confirmed(pending->wait(up + 60s));
  WARN("the queued messages were confirmed "
       << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - up).count()
       << " ms after all-up");
  CHECK(publisher->healthy());
  CHECK(publisher->probe(5s));

  const auto deliveries = consume_all(mock, topic, ids_of(messages));
  const auto copies = copies_by_id(deliveries);
  for (const auto& m : messages) {
    INFO(m.message_id);
    REQUIRE(copies.contains(m.message_id));
    CHECK(copies.at(m.message_id) == 1);  // exactly once: re-publications attached
  }
  require_no_gaps(messages, {}, deliveries);
}

TEST_CASE("a broker taken down and brought back mid-stream of keyed messages leaves no gap in "
          "any key",
          "[kafka][fault]") {
  KafkaMock mock(3);
  const std::string topic = create_topic(mock, "fault_stream", 6, 1);
  // The mock picks leaders at random: make broker 2 lead two partitions.
  for (int partition = 0; partition < 6; ++partition)
    mock.control("partition-leader " + topic + " " + std::to_string(partition) + " " +
                 std::to_string(partition % 3 + 1));
  auto publisher = kafka::make_publisher(producer_options(mock));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 6, 6), 10s));

  const auto messages = make_messages(topic, "stream", 3000, /*keys=*/40);
  // Broker 2 goes down at round 5 and comes back at round 12 (rounds with a
  // dead broker take the publish timeout, 1 s each).
  const auto report = publish_like_the_relay(
      *publisher, messages, 200, 1s, Clock::now() + 180s, [&](int round) {
        if (round == 5) mock.control("broker-down 2");
        if (round == 12) mock.control("broker-up 2");
      });
  WARN(report.rounds << " rounds, " << report.rounds_with_failures << " with failures");
  REQUIRE(report.finished);
  REQUIRE(report.rounds > 12);              // the broker went down and up mid-stream ...
  REQUIRE(report.rounds_with_failures > 0);  // ... and the fault struck
  CHECK(report.permanently_failed.empty());

  const auto deliveries = consume_all(mock, topic, ids_of(messages), 60s);
  const auto copies = copies_by_id(deliveries);
  for (const auto& m : messages) {
    INFO(m.message_id);
    REQUIRE(copies.contains(m.message_id));
  }
  require_no_gaps(messages, {}, deliveries);
}

TEST_CASE("the cluster killed and restarted mid-stream of keyed messages: no gap in any key "
          "among the messages published after the restart",
          "[kafka][fault]") {
  KafkaMock mock(1);
  const std::string topic = txbox::test::unique_name("fault_stream_kill");
  auto publisher = kafka::make_publisher(producer_options(mock));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 4, 4), 10s));

  // The restarted mock has lost everything stored before the kill (it keeps
  // data in memory), so the stream is checked from its first round after it.
  std::vector<Message> messages = make_messages(topic, "kill", 2000, /*keys=*/25);
  int restart_round = -1;
  const auto report = publish_like_the_relay(
      *publisher, messages, 100, 1s, Clock::now() + 180s, [&](int round) {
        if (round == 4) mock.kill();
        if (round == 8) {
          mock.restart();
          restart_round = round;
        }
      });
  WARN(report.rounds << " rounds, " << report.rounds_with_failures << " with failures");
  REQUIRE(report.finished);
  REQUIRE(restart_round == 8);
  REQUIRE(report.rounds_with_failures > 0);
  CHECK(report.permanently_failed.empty());

  // The last message of every key went out after the restart.
  std::set<std::string> last_of_each_key;
  {
    std::map<std::string, std::string> last;
    for (const auto& m : messages) last[*m.key] = m.message_id;
    for (const auto& [key, id] : last) last_of_each_key.insert(id);
  }
  const auto deliveries = consume_all(mock, topic, last_of_each_key, 60s);
  // Every message in the topic now was stored after the restart. Per key:
  // those present form a contiguous run of the publish order ending with
  // the key's last message (an earlier message may have been stored before
  // the kill and lost with the mock's memory), with first occurrences in order.
  std::map<std::string, std::vector<std::string>> order_by_key;
  for (const auto& m : messages) order_by_key[*m.key].push_back(m.message_id);
  std::map<std::string, std::vector<std::string>> first_seen_by_key;
  std::set<std::string> seen;
  for (const auto& d : deliveries) {
    if (d.message.message_id.rfind("kill-", 0) != 0) continue;
    if (seen.insert(d.message.message_id).second)
      first_seen_by_key[*d.message.key].push_back(d.message.message_id);
  }
  REQUIRE_FALSE(seen.empty());
  for (const auto& [key, order] : order_by_key) {
    const auto& got = first_seen_by_key[key];
    INFO("key " << key << ": " << got.size() << " of " << order.size() << " present");
    REQUIRE_FALSE(got.empty());  // the last messages of every key went out after the restart
    const std::size_t offset = order.size() - got.size();
    for (std::size_t i = 0; i < got.size(); ++i) {
      INFO("position " << i);
      REQUIRE(got[i] == order[offset + i]);
    }
  }
}
