// Faults with a private, durable redis-server (AOF, fsync always): the server
// killed mid-drain and restarted on the same port, the relay SIGKILLed during
// a drain, a consumer killed mid-stream.
#include <csignal>

#include "redis_support.hpp"

namespace test = txbox::test;
namespace rt = txbox::test::redis;
using namespace std::chrono_literals;

TEST_CASE("redis: server killed mid-drain under 3 relays and restarted on the same port: nothing lost, nothing "
          "doubled, per-key order",
          "[fault]") {
  constexpr int kMessages = 20000, kKeys = 200;
  rt::PrivateRedis redis;
  auto url = test::create_database("rediskill");
  auto stream = test::unique_name("orders");
  test::fill_outbox(url, stream, kMessages, kKeys);
  auto log = "/tmp/" + stream + ".log";
  std::vector<std::unique_ptr<test::Process>> relays;
  for (int i = 0; i < 3; ++i)
    relays.push_back(std::make_unique<test::Process>(
        test::relay_drain_command(url, redis.url(),
                                  {"--workers", "4", "--batch-size", "100", "--publish-timeout", "3000"}),
        log + std::to_string(i)));
  REQUIRE(test::wait_for([&] { return test::outbox_rows(url) <= kMessages * 2 / 3; }, 120s));
  redis.kill();  // SIGKILL: only what was fsynced survives, and only that was acknowledged
  std::this_thread::sleep_for(3s);
  for (auto& relay : relays) CHECK(relay->running());
  CHECK(test::outbox_rows(url) > 0);
  redis.start();
  for (auto& relay : relays) REQUIRE(relay->wait(4min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
  // Re-published batches were deduplicated: exactly one entry per message.
  rt::Client client(redis.url());
  CHECK(client.xlen(stream) == kMessages);
  auto stats = rt::consume_into_effects(url, redis.url(), stream, kMessages);
  CHECK(stats.duplicates == 0);
  // Per key, in the order the stream holds them.
  test::check_effects(url, kMessages);
  int unavailable = 0, available = 0;
  for (int i = 0; i < 3; ++i) {
    auto output = test::read_file(log + std::to_string(i));
    unavailable += test::count_lines_with(output, "broker unavailable");
    available += test::count_lines_with(output, "broker available again");
    CHECK(test::count_lines_with(output, "broker unavailable") <= 8);
  }
  CHECK(unavailable >= 1);
  CHECK(available >= 1);
}

TEST_CASE("redis: relay SIGKILLed during a drain: the next relay finishes, dedup keeps one entry per message", "[fault]") {
  constexpr int kMessages = 20000, kKeys = 200;
  rt::PrivateRedis redis;
  auto url = test::create_database("redisrelaykill");
  auto stream = test::unique_name("orders");
  test::fill_outbox(url, stream, kMessages, kKeys);
  auto log = "/tmp/" + stream + ".log";
  auto command = test::relay_drain_command(url, redis.url(), {"--workers", "4", "--batch-size", "200"});
  {
    test::Process relay(command, log);
    REQUIRE(test::wait_for([&] { return test::outbox_rows(url) <= kMessages / 2; }, 120s));
    relay.signal(SIGKILL);
    relay.wait(10s);
  }
  CHECK(test::outbox_rows(url) > 0);
  test::Process relay(command, log);
  REQUIRE(relay.wait(4min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  rt::Client client(redis.url());
  CHECK(client.xlen(stream) == kMessages);
  rt::consume_into_effects(url, redis.url(), stream, kMessages);
  test::check_effects(url, kMessages);
}

TEST_CASE("redis: consumer killed mid-stream twice, batched on 4 lanes, and restarted: each message applied once, "
          "per-key order",
          "[fault]") {
  constexpr int kMessages = 10000, kKeys = 100;
  rt::PrivateRedis redis;
  auto url = test::create_database("redisconsumerkill");
  auto stream = test::unique_name("orders");
  test::fill_outbox(url, stream, kMessages, kKeys);
  REQUIRE(test::run(test::relay_drain_command(url, redis.url(), {"--workers", "4"}), 4min).exit_code == 0);
  test::create_effects_table(url);
  auto log = "/tmp/" + stream + ".consumer.log";
  std::vector<std::string> command{std::string(TXBOX_BINARY_DIR) + "/tests/redis/txbox-test-redis-consumer",
                                   "--database-url", test::fast_commit(url),
                                   "--redis-url", redis.url(),
                                   "--stream", stream,
                                   "--group", "billing",
                                   "--name", "billing-1",
                                   "--claim-idle-ms", "2000",
                                   "--expect", std::to_string(kMessages),
                                   "--workers", "4"};
  auto effects = [&] { return test::scalar(url, "SELECT count(*) FROM effects"); };
  for (int kill = 1; kill <= 2; ++kill) {
    test::Process consumer(command, log);
    REQUIRE(test::wait_for([&] { return effects() >= kMessages * kill / 3; }, 120s));
    consumer.signal(SIGKILL);
    consumer.wait(10s);
  }
  CHECK(effects() < kMessages);
  test::Process consumer(command, log);  // the same name: its own pending entries first
  REQUIRE(consumer.wait(4min) == std::optional<int>(0));
  test::check_effects(url, kMessages);
  rt::Client client(redis.url());
  CHECK(client.pending(stream, "billing") == 0);
}
