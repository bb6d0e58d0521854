// Consumer killed with SIGKILL mid-stream, five times, while it applies
// batches on four lanes: every message's effect still happens exactly once,
// in per-key order.
#include "fault_support.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

namespace {

constexpr int kMessages = 40000, kKeys = 200;

// kMessages in a new topic, published by the relay; the effects table; the
// test consumer's command on 4 lanes (inbox consumer "billing").
struct DrainedTopic {
  std::string url;
  std::vector<std::string> command;
  std::string log;
};
DrainedTopic drained_topic(const std::string& prefix) {
  auto url = test::create_database(prefix);
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, kMessages, kKeys);
  {
    test::Process relay(test::relay_command(url, test::kafka_bootstrap()), "/tmp/" + topic + ".log");
    REQUIRE(relay.wait(3min) == std::optional<int>(0));
  }
  test::create_effects_table(url);
  return {url,
          {test::binary_path("txbox-test-consumer"), "--database-url", test::fast_commit(url), "--bootstrap-servers",
           test::kafka_bootstrap(), "--topic", topic, "--group", "billing", "--expect", std::to_string(kMessages),
           "--workers", "4"},
          "/tmp/" + topic + ".consumer.log"};
}

}  // namespace

TEST_CASE("consumer SIGKILLed mid-stream 5 times, batched on 4 lanes: effects exactly once, in key order", "[fault]") {
  const auto run = drained_topic("consumerkill");
  test::kill_consumer_then_finish(run.url, run.command, run.log, kMessages, 5, 7);
}

TEST_CASE("SIGTERM to a consumer on 4 lanes: it finishes the batches in hand, acks them and exits 0; a restart "
          "applies the rest exactly once, in key order",
          "[fault]") {
  const auto run = drained_topic("consumerterm");
  const std::string& url = run.url;
  {
    test::Process consumer(run.command, run.log);
    REQUIRE(test::wait_for([&] { return test::scalar(url, "SELECT count(*) FROM effects") >= kMessages / 5; }, 2min));
    consumer.signal(SIGTERM);
    CHECK(consumer.wait(1min) == std::optional<int>(0));
  }
  const long long applied = test::scalar(url, "SELECT count(*) FROM effects");
  INFO("applied before SIGTERM: " << applied);
  REQUIRE(applied < kMessages);  // the stop struck mid-stream
  // The restart reads from the committed offsets: what the first run
  // applied and acked is not read again; what it left queued in its lanes
  // is (with whatever committed messages followed it in its partition,
  // which the inbox skips as duplicates).
  test::Process consumer(run.command, run.log);
  REQUIRE(consumer.wait(4min) == std::optional<int>(0));
  test::check_effects(url, kMessages);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.inbox WHERE consumer = 'billing'") == kMessages);
}
