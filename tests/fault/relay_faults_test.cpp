// Relay-side faults: SIGKILL during a drain (10 times), SIGTERM during a
// drain, PostgreSQL stopped and restarted under the relay.
#include <csignal>

#include "fault_support.hpp"
#include "support/private_pg.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

TEST_CASE("relay SIGKILLed 10 times during a 100,000-message drain loses nothing", "[fault]") {
  constexpr int kMessages = 100000, kKeys = 1000;
  auto url = test::create_database("kill10");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, kMessages, kKeys);
  auto command = test::relay_command(url, test::kafka_bootstrap(), {"--workers", "2", "--batch-size", "100"});
  long long left = kMessages;
  for (int kill = 0; kill < 10; ++kill) {
    test::Process relay(command, "/tmp/" + topic + ".log");
    // Let it start moving rows, then kill it without warning a moment later.
    test::wait_for([&] { return test::outbox_rows(url) < left || !relay.running(); }, 60s);
    std::this_thread::sleep_for(50ms);
    relay.signal(SIGKILL);
    relay.wait(10s);
    left = test::outbox_rows(url);
    INFO("kill " << kill << ": " << left << " rows left");
    REQUIRE(left > 0);
  }
  test::Process relay(command, "/tmp/" + topic + ".log");
  REQUIRE(relay.wait(5min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  auto stats = test::consume_into_effects(url, test::kafka_bootstrap(), topic, kMessages);
  INFO("duplicates skipped by the inbox: " << stats.duplicates);
  test::check_effects(url, kMessages);
}

TEST_CASE("SIGTERM during a drain exits 0 within the timeout and a restart finishes the rest", "[fault]") {
  constexpr int kMessages = 30000, kKeys = 300;
  auto url = test::create_database("sigterm");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, kMessages, kKeys);
  auto command = test::relay_command(url, test::kafka_bootstrap(),
                                     {"--workers", "4", "--batch-size", "100", "--shutdown-timeout", "5000"});
  {
    test::Process relay(command, "/tmp/" + topic + ".log");
    test::wait_for([&] { return test::outbox_rows(url) <= kMessages * 2 / 3; }, 60s);
    auto signalled = std::chrono::steady_clock::now();
    relay.signal(SIGTERM);
    auto code = relay.wait(8s);  // shutdown timeout 5 s, plus a margin
    CHECK(code == std::optional<int>(0));
    CHECK(std::chrono::steady_clock::now() - signalled < 8s);
  }
  auto left = test::outbox_rows(url);
  CHECK(left > 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0);
  test::Process relay(command, "/tmp/" + topic + ".log");
  REQUIRE(relay.wait(3min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  test::consume_into_effects(url, test::kafka_bootstrap(), topic, kMessages);
  test::check_effects(url, kMessages);
}

TEST_CASE("PostgreSQL stopped mid-drain and started again: the relay reconnects and loses nothing", "[fault]") {
  constexpr int kMessages = 30000, kKeys = 300;
  test::PrivatePostgres pg;
  auto url = pg.create_database("pgdown");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, kMessages, kKeys);
  auto log = "/tmp/" + topic + ".log";
  test::Process relay(test::relay_command(url, test::kafka_bootstrap(), {"--workers", "4", "--batch-size", "100"}),
                      log);
  test::wait_for([&] { return test::outbox_rows(url) <= kMessages * 2 / 3; }, 60s);
  pg.stop();
  std::this_thread::sleep_for(3s);
  CHECK(relay.running());  // it waits for the database instead of dying
  pg.start();
  REQUIRE(relay.wait(3min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  auto output = test::read_file(log);
  CHECK(test::count_lines_with(output, "reconnected to PostgreSQL") >= 1);
  test::consume_into_effects(url, test::kafka_bootstrap(), topic, kMessages);
  test::check_effects(url, kMessages);
}
