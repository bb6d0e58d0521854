// Kafka adapter fault tests around fatal producer errors: with
// enable.gapless.guarantee a MessageSet rejected by the broker stops the
// librdkafka producer (ERR__GAPLESS_GUARANTEE, a fatal error) instead of
// letting later messages of its partition go on. The publisher must survive
// that: replace its producer (one log line), fail what the old one held
// transiently, keep later batches from overtaking those failures, and judge a
// size rejection by its offender only. Each test runs a private mock cluster
// (KafkaMock) and injects the broker errors through its control FIFO.

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
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

constexpr const char* kReplacedLine = "replaced it with a new producer";

// Captures what the adapter logs (spdlog's default logger) during a test.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(2000)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    std::erase(sinks, sink_);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<std::string> lines_containing(const std::string& text) const {
    std::vector<std::string> out;
    for (const auto& line : sink_->last_formatted())
      if (line.find(text) != std::string::npos) out.push_back(line);
    return out;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

}  // namespace

TEST_CASE("a MessageSet rejected for its size: only the largest message fails permanently, the "
          "others are retried and stored once",
          "[kafka][fault]") {
  LogCapture log;
  KafkaMock mock;
  const std::string topic = create_topic(mock, "fault_size", 1, 1);
  auto publisher = one_message_set_publisher(mock, topic);

  // The broker rejects the next MessageSet as too large: all its messages
  // get the same size error.
  mock.control("push-errors Produce MSG_SIZE_TOO_LARGE");
  auto messages = make_messages(topic, "size", 8, /*keys=*/1);
  messages[3].payload.assign(5000, 'x');
  const auto results = publisher->publish(messages, 20s);
  REQUIRE(results.size() == messages.size());
  std::vector<Message> retry;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    INFO("message " << i << ": " << to_string(results[i].error_class) << ": " << results[i].error);
    REQUIRE_FALSE(results[i].confirmed);  // the fault struck the whole batch
    if (i == 3) {
      CHECK(results[i].error_class == ErrorClass::permanent);
      CHECK_THAT(results[i].error, Catch::Contains("bytes for topic '" + topic + "'") &&
                                       Catch::Contains("make the payload smaller") &&
                                       Catch::Contains("MSG_SIZE_TOO_LARGE"));
    } else {
      CHECK(results[i].error_class == ErrorClass::transient);
      CHECK_THAT(results[i].error, Catch::Contains("failed together with an oversized message") &&
                                       Catch::Contains("will be retried"));
      retry.push_back(messages[i]);
    }
  }
  // The rejection was fatal for the gapless producer: replaced, once.
  REQUIRE(eventually([&] { return !log.lines_containing(kReplacedLine).empty(); }, 10s));
  const auto replaced = log.lines_containing(kReplacedLine);
  CHECK(replaced.size() == 1);
  CHECK_THAT(replaced.front(), Catch::Contains("_GAPLESS_GUARANTEE"));

  // The innocent ones go through on the next attempt, in order, once.
  std::vector<PublishResult> again;
  REQUIRE(eventually(
      [&] {
        again = publisher->publish(retry, 5s);
        for (const auto& r : again)
          if (!r.confirmed) return false;
        return true;
      },
      30s));
  const auto deliveries = consume_all(mock, topic, ids_of(retry));
  const auto copies = copies_by_id(deliveries);
  CHECK_FALSE(copies.contains(messages[3].message_id));
  for (const auto& m : retry) {
    INFO(m.message_id);
    REQUIRE(copies.contains(m.message_id));
    CHECK(copies.at(m.message_id) == 1);
  }
  require_no_gaps(messages, {messages[3].message_id}, deliveries);
  CHECK(log.lines_containing(kReplacedLine).size() == 1);
}

TEST_CASE("a message over the producer's own size limit fails permanently on its own",
          "[kafka][fault]") {
  KafkaMock mock;
  const std::string topic = txbox::test::unique_name("fault_local_size");
  auto options = producer_options(mock);
  options.properties["message.max.bytes"] = "10000";
  auto publisher = kafka::make_publisher(options);
  auto messages = make_messages(topic, "local", 5, /*keys=*/1);
  messages[2].payload.assign(20000, 'x');
  const auto results = publisher->publish(messages, 20s);
  REQUIRE(results.size() == messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    if (i == 2) {
      CHECK_FALSE(results[i].confirmed);
      CHECK(results[i].error_class == ErrorClass::permanent);
      CHECK_THAT(results[i].error, Catch::Contains("make the payload smaller"));
    } else {
      CHECK(results[i].confirmed);  // neither rejected with it nor held back
    }
  }
}

TEST_CASE("a fatal producer error mid-stream: the producer is replaced, what it held fails "
          "transiently, later batches cannot overtake it, nothing is lost",
          "[kafka][fault]") {
  LogCapture log;
  KafkaMock mock;
  const std::string topic = create_topic(mock, "fault_fatal", 1, 1);
  auto publisher = kafka::make_publisher(producer_options(mock));
  require_all_confirmed(publisher->publish(make_messages(topic, "warm", 1, 1), 10s));

  // Slow responses keep several MessageSets of the partition in flight when
  // the first one is rejected; the rejection is fatal (gapless guarantee).
  // INVALID_RECORD: a permanent error of that MessageSet alone (an
  // authorization error would also fail the topic's queued messages).
  mock.control("rtt 1 300");
  mock.control("push-errors Produce INVALID_RECORD");
  const auto first = make_messages(topic, "first", 50, /*keys=*/2);
  const auto second = make_messages(topic, "second", 50, /*keys=*/2);
  auto pending_first = publisher->start(first);
  // The first batch is on the wire by now (its response takes 300 ms); the
  // second goes out in MessageSets of its own behind it.
  std::this_thread::sleep_for(100ms);
  auto pending_second = publisher->start(second);

  REQUIRE(eventually([&] { return !log.lines_containing(kReplacedLine).empty(); }, 20s));
  const auto replaced = log.lines_containing(kReplacedLine);
  REQUIRE(replaced.size() == 1);
  CHECK_THAT(replaced.front(), Catch::Contains("_GAPLESS_GUARANTEE") &&
                                   Catch::Contains("failed to validate record") &&
                                   Catch::Contains("will be retried"));

  // A batch started while those two are not settled yet is refused: sending
  // it on the new producer could store its messages before theirs.
  const auto third = make_messages(topic, "third", 10, /*keys=*/2);
  const auto third_results = publisher->publish(third, 10s);
  for (const auto& r : third_results) {
    INFO(r.error);
    REQUIRE_FALSE(r.confirmed);
    // Not sent through no fault of its own: the relay counts no attempt.
    REQUIRE(r.error_class == ErrorClass::outage);
    REQUIRE_THAT(r.error, Catch::Contains("not sent") && Catch::Contains("earlier batch"));
  }

  const auto deadline = Clock::now() + 20s;
  const auto first_results = pending_first->wait(deadline);
  const auto second_results = pending_second->wait(deadline);
  std::set<std::string> rejected;  // the MessageSet the broker refused
  int transient = 0;
  for (const auto* batch : {&first_results, &second_results}) {
    const auto& messages = batch == &first_results ? first : second;
    for (std::size_t i = 0; i < batch->size(); ++i) {
      const PublishResult& r = (*batch)[i];
      INFO(messages[i].message_id << ": " << to_string(r.error_class) << ": " << r.error);
      REQUIRE_FALSE(r.confirmed);  // nothing after the rejected set got through
      if (r.error_class == ErrorClass::permanent) {
        REQUIRE_THAT(r.error, Catch::Contains("INVALID_RECORD"));
        rejected.insert(messages[i].message_id);
      } else {
        REQUIRE(r.error_class == ErrorClass::transient);
        REQUIRE_THAT(r.error, Catch::Contains("will be retried"));
        ++transient;
      }
    }
  }
  REQUIRE_FALSE(rejected.empty());
  REQUIRE(rejected.contains(first.front().message_id));  // the first MessageSet
  REQUIRE(transient > 0);  // the fault struck mid-run: messages were still held
  WARN(rejected.size() << " message(s) rejected with the MessageSet, " << transient
                       << " failed transiently with the replaced producer");

  // Everything that failed transiently goes through on the new producer,
  // the way the relay retries: per key, in order.
  mock.control("rtt 1 0");
  std::vector<Message> all;
  for (const auto* batch : {&first, &second, &third})
    for (const auto& m : *batch)
      if (!rejected.contains(m.message_id)) all.push_back(m);
  const auto report = publish_like_the_relay(*publisher, all, 40, 5s, Clock::now() + 60s,
                                             [](int) {});
  REQUIRE(report.finished);
  CHECK(report.permanently_failed.empty());

  const auto deliveries = consume_all(mock, topic, ids_of(all));
  const auto copies = copies_by_id(deliveries);
  for (const auto& m : all) {
    INFO(m.message_id);
    REQUIRE(copies.contains(m.message_id));
  }
  for (const auto& id : rejected) CHECK_FALSE(copies.contains(id));
  std::vector<Message> published;
  for (const auto* batch : {&first, &second, &third})
    published.insert(published.end(), batch->begin(), batch->end());
  require_no_gaps(published, rejected, deliveries);
  CHECK(log.lines_containing(kReplacedLine).size() == 1);
  CHECK(publisher->healthy());
}
