// RabbitMQ under faults: the broker killed mid-drain and restarted (private
// node), the relay SIGKILLed mid-drain, the consumer SIGKILLed mid-stream.
// Every message is applied exactly once through the inbox, in per-key order.
#include <csignal>

#include "rabbitmq_support.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

TEST_CASE("rabbitmq fault: broker killed mid-drain and restarted: nothing lost", "[fault][rabbitmq]") {
  constexpr int kMessages = 20000, kKeys = 200;
  test::PrivateRabbit rabbit;
  auto url = test::create_database("rmqbrokerkill");
  auto queue = test::unique_name("orders");
  test::rabbit_consumer(rabbit.url(), queue)->close();  // durable queue
  rabbit.sync_definitions();  // or the queue may not survive the kill below
  test::fill_outbox(url, queue, kMessages, kKeys);
  auto log = "/tmp/" + queue + ".log";
  test::Process relay(test::relay_drain_command(url, rabbit.url(),
                                                {"--workers", "4", "--batch-size", "200", "--publish-timeout", "5000",
                                                 "--retry-cap", "2000", "--outage-backoff-cap", "2000"}),
                      log);
  REQUIRE(test::wait_for([&] { return test::outbox_rows(url) <= kMessages * 2 / 3; }, 120s));
  rabbit.kill();  // mid-drain
  std::this_thread::sleep_for(3s);
  CHECK(relay.running());
  long long left = test::outbox_rows(url);
  INFO(left << " rows left when the broker was down");
  CHECK(left > 0);
  rabbit.start();  // same directory: the durable queue and its persistent messages come back
  REQUIRE(relay.wait(4min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  auto stats = test::consume_queue_into_effects(url, rabbit.url(), queue, kMessages);
  INFO("duplicates " << stats.duplicates);
  test::check_effects(url, kMessages);
  auto output = test::read_file(log);
  CHECK(output.find("RabbitMQ") != std::string::npos);  // the outage was logged
}

TEST_CASE("rabbitmq fault: relay SIGKILLed mid-drain, restarted: nothing lost", "[fault][rabbitmq]") {
  constexpr int kMessages = 20000, kKeys = 200;
  auto url = test::create_database("rmqrelaykill");
  auto queue = test::unique_name("orders");
  test::rabbit_consumer(test::rabbitmq_url(), queue)->close();
  test::fill_outbox(url, queue, kMessages, kKeys);
  auto log = "/tmp/" + queue + ".log";
  for (int kill = 0; kill < 3; ++kill) {
    test::Process relay(test::relay_drain_command(url, test::rabbitmq_url(), {"--workers", "4", "--batch-size", "100"}),
                        log);
    long long before = test::outbox_rows(url);
    test::wait_for([&] { return test::outbox_rows(url) <= before - kMessages / 5 || !relay.running(); }, 60s);
    relay.signal(SIGKILL);
    relay.wait(10s);
  }
  INFO(test::outbox_rows(url) << " rows left after 3 kills");
  test::Process relay(test::relay_drain_command(url, test::rabbitmq_url(), {"--workers", "4"}), log);
  REQUIRE(relay.wait(4min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  auto stats = test::consume_queue_into_effects(url, test::rabbitmq_url(), queue, kMessages);
  INFO("duplicates " << stats.duplicates);
  test::check_effects(url, kMessages);
}

TEST_CASE("rabbitmq fault: consumer SIGKILLed mid-stream 4 times, batched on 4 lanes: effects exactly once, in key "
          "order",
          "[fault][rabbitmq]") {
  constexpr int kMessages = 20000, kKeys = 200;
  auto url = test::create_database("rmqconsumerkill");
  auto queue = test::unique_name("orders");
  test::rabbit_consumer(test::rabbitmq_url(), queue)->close();
  test::fill_outbox(url, queue, kMessages, kKeys);
  {
    test::Process relay(test::relay_drain_command(url, test::rabbitmq_url(), {"--workers", "4"}),
                        "/tmp/" + queue + ".log");
    REQUIRE(relay.wait(3min) == std::optional<int>(0));
  }
  test::create_effects_table(url);
  std::vector<std::string> command{test::binary_path("tests/rabbitmq/txbox-test-rabbitmq-consumer"), "--database-url",
                                   test::fast_commit(url), "--broker-url", test::rabbitmq_url(), "--queue", queue,
                                   "--expect", std::to_string(kMessages), "--workers", "4"};
  test::kill_consumer_then_finish(url, command, "/tmp/" + queue + ".consumer.log", kMessages, 4, 6);
}
