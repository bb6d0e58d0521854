// Consumer killed with SIGKILL mid-stream, five times: every message's
// effect still happens exactly once, in per-key order.
#include <csignal>

#include "fault_support.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

TEST_CASE("consumer SIGKILLed mid-stream 5 times: effects exactly once", "[fault]") {
  constexpr int kMessages = 20000, kKeys = 200;
  auto url = test::create_database("consumerkill");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, kMessages, kKeys);
  {
    test::Process relay(test::relay_command(url, test::kafka_bootstrap()), "/tmp/" + topic + ".log");
    REQUIRE(relay.wait(3min) == std::optional<int>(0));
  }
  test::create_effects_table(url);
  std::vector<std::string> command{test::binary_path("txbox-test-consumer"), "--database-url", test::fast_commit(url),
                                   "--bootstrap-servers", test::kafka_bootstrap(), "--topic", topic, "--group",
                                   "billing", "--expect", std::to_string(kMessages)};
  long long applied = 0;
  for (int kill = 0; kill < 5; ++kill) {
    test::Process consumer(command, "/tmp/" + topic + ".consumer.log");
    long long target = applied + kMessages / 7;
    test::wait_for([&] { return test::scalar(url, "SELECT count(*) FROM effects") >= target || !consumer.running(); },
                   120s);
    consumer.signal(SIGKILL);
    consumer.wait(10s);
    applied = test::scalar(url, "SELECT count(*) FROM effects");
    INFO("kill " << kill << ": " << applied << " applied");
    REQUIRE(applied < kMessages);
  }
  test::Process consumer(command, "/tmp/" + topic + ".consumer.log");
  REQUIRE(consumer.wait(4min) == std::optional<int>(0));
  test::check_effects(url, kMessages);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.inbox WHERE consumer = 'billing'") == kMessages);
}
