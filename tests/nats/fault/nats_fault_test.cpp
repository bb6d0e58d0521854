// NATS under faults, each test with a private nats-server: the server killed
// mid-drain and restarted on the same port, the relay SIGKILLed mid-drain,
// the consumer SIGKILLed mid-stream. Every message must reach the inbox
// exactly once (and, where the stream is read in one go, in per-key order).
#include <catch2/catch.hpp>
#include <csignal>
#include <pqxx/pqxx>
#include <thread>

#include "../../fault/fault_support.hpp"
#include "../nats_support.hpp"
#include "support/process.hpp"
#include "txbox/consumer/inbox_consumer.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

namespace {

// Consumes `subject` through the inbox into `effects` until it holds n rows.
txbox::consumer::ConsumeStats consume_into_effects(const std::string& url, const std::string& nats_url,
                                                   const std::string& subject, long long n,
                                                   std::chrono::seconds timeout = 240s) {
  return test::consume_broker_into_effects(
      url,
      [&] {
        txbox::nats::ConsumerOptions options;
        options.subject = subject;
        options.durable = test::unique_name("verify");
        options.batch = 500;
        return txbox::nats::make_consumer(test::nats_broker_url(nats_url), options);
      },
      n, timeout);
}

// JetStream holds each of the n messages once, and consuming `subject`
// through the inbox applies each exactly once, per key in order.
void check_stored_once_applied_once(const std::string& url, const std::string& nats_url, const std::string& subject,
                                    long long n) {
  CHECK(test::JetStreamAdmin(nats_url).message_count(test::nats_stream_name(subject)) == n);
  auto stats = consume_into_effects(url, nats_url, subject, n);
  CHECK(stats.processed == static_cast<uint64_t>(n));
  test::check_effects(url, n);
}

void wait_until_outbox_below(const std::string& url, long long rows, std::chrono::seconds timeout) {
  CHECK(test::wait_for([&] { return test::outbox_rows(url) < rows; }, timeout));
}

}  // namespace

TEST_CASE("nats server killed mid-drain under 3 relays and restarted: every message exactly once, per-key order",
          "[nats][fault]") {
  constexpr int kMessages = 20000, kKeys = 100;
  test::PrivateNats server;
  auto url = test::create_database("natsfault");
  const auto subject = test::nats_subject("orders");
  test::fill_outbox(url, subject, kMessages, kKeys);

  std::vector<std::unique_ptr<test::Process>> relays;
  for (int i = 0; i < 3; ++i)
    relays.push_back(std::make_unique<test::Process>(
        test::relay_drain_command(url, server.url() + "?create_streams=true",
                                  {"--workers", "4", "--batch-size", "200", "--publish-timeout", "3000",
                                   "--retry-base", "100", "--retry-cap", "1000"}),
        "/tmp/" + subject + "-relay" + std::to_string(i) + ".log"));
  wait_until_outbox_below(url, kMessages * 3 / 4, 120s);
  server.kill();
  const long long left_at_kill = test::outbox_rows(url);
  std::this_thread::sleep_for(3s);
  for (auto& relay : relays) CHECK(relay->running());  // they survive the outage
  server.start();
  for (auto& relay : relays) CHECK(relay->wait(5min) == std::optional<int>(0));
  INFO("rows left at the kill: " << left_at_kill);
  CHECK(left_at_kill > 0);
  CHECK(test::outbox_rows(url) == 0);
  int disconnected = 0;
  for (int i = 0; i < 3; ++i)
    disconnected += test::count_lines_with(test::read_file("/tmp/" + subject + "-relay" + std::to_string(i) + ".log"),
                                           "disconnected");
  CHECK(disconnected >= 1);
  // Everything acked by JetStream survived the crash, nothing is stored twice.
  // Consumed, exactly once and, per key, first occurrences in order: the
  // publisher's connection has no reconnect buffer and a batch stops at its
  // first failed send, so a kill leaves a prefix of each batch in the stream.
  check_stored_once_applied_once(url, server.url(), subject, kMessages);
}

TEST_CASE("nats: relay SIGKILLed mid-drain and restarted loses nothing, stores nothing twice", "[nats][fault]") {
  constexpr int kMessages = 20000, kKeys = 100;
  test::PrivateNats server;
  auto url = test::create_database("natskill");
  const auto subject = test::JetStreamAdmin(server.url()).add_subject_with_stream("orders");
  test::fill_outbox(url, subject, kMessages, kKeys);
  auto args = test::relay_drain_command(url, server.url(), {"--workers", "2", "--batch-size", "100"});
  {
    test::Process relay(args, "/tmp/" + subject + "-relay1.log");
    wait_until_outbox_below(url, kMessages * 3 / 4, 120s);
    relay.signal(SIGKILL);
    CHECK(relay.wait(10s) == std::optional<int>(128 + SIGKILL));
  }
  const long long left = test::outbox_rows(url);
  INFO("rows left after the kill: " << left);
  CHECK(left > 0);
  CHECK(left < kMessages);
  {
    test::Process relay(args, "/tmp/" + subject + "-relay2.log");
    CHECK(relay.wait(3min) == std::optional<int>(0));
  }
  CHECK(test::outbox_rows(url) == 0);
  // Batches published by the killed relay but not yet deleted from the
  // outbox were published again: JetStream dropped them (Nats-Msg-Id).
  check_stored_once_applied_once(url, server.url(), subject, kMessages);
}

TEST_CASE("nats: consumer SIGKILLed mid-stream twice, batched on 4 lanes, and restarted applies every message "
          "exactly once, in key order",
          "[nats][fault]") {
  constexpr int kMessages = 5000, kKeys = 50;
  test::PrivateNats server;
  auto url = test::create_database("natsconsumerkill");
  const auto subject = test::JetStreamAdmin(server.url()).add_subject_with_stream("billing");
  test::fill_outbox(url, subject, kMessages, kKeys);
  {
    test::Process relay(test::relay_drain_command(url, server.url()), "/tmp/" + subject + "-relay.log");
    REQUIRE(relay.wait(3min) == std::optional<int>(0));
  }
  test::create_effects_table(url);
  const auto durable = test::unique_name("billing");
  // (test::binary_path only knows the shared binaries; ours is in tests/nats.)
  std::vector<std::string> args{std::string(TXBOX_BINARY_DIR) + "/tests/nats/txbox-test-nats-consumer", "--database-url", url,
                                "--nats-url", server.url(), "--subject", subject, "--durable", durable,
                                "--expect", std::to_string(kMessages), "--ack-wait-ms", "2000", "--workers", "4"};
  for (int kill = 1; kill <= 2; ++kill) {
    test::Process consumer(args, "/tmp/" + subject + "-consumer" + std::to_string(kill) + ".log");
    CHECK(test::wait_for([&] { return test::scalar(url, "SELECT count(*) FROM effects") > kMessages * kill / 3; },
                         120s));
    consumer.signal(SIGKILL);
    CHECK(consumer.wait(10s) == std::optional<int>(128 + SIGKILL));
  }
  const long long applied = test::scalar(url, "SELECT count(*) FROM effects");
  INFO("applied before the kill: " << applied);
  CHECK(applied < kMessages);
  {
    test::Process consumer(args, "/tmp/" + subject + "-consumer3.log");
    CHECK(consumer.wait(3min) == std::optional<int>(0));
  }
  // Exactly once, and in key order: messages fetched by a killed consumer
  // come back after AckWait, and its successor fetches nothing new before.
  test::check_effects(url, kMessages);
}
