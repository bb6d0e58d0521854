// End to end: outbox rows -> txbox-relay (amqp://) -> RabbitMQ queue ->
// adapter consumer / InboxConsumer.
#include <catch2/catch.hpp>

#include "rabbitmq_support.hpp"

namespace test = txbox::test;
namespace brokers = txbox::brokers;
namespace consumer = txbox::consumer;
using namespace std::chrono_literals;

TEST_CASE("rabbitmq relay: a plain-SQL outbox insert is delivered with the right fields", "[rabbitmq]") {
  auto url = test::create_database("rmqsql");
  auto queue = test::unique_name("orders");
  auto rabbit = test::rabbit_consumer(test::rabbitmq_url(), queue);
  auto id = test::insert_sql_order_row(url, queue);
  test::Process relay(test::relay_drain_command(url, test::rabbitmq_url()), "/tmp/" + queue + ".log");
  REQUIRE(relay.wait(60s) == std::optional<int>(0));
  auto d = rabbit->poll(10s);
  REQUIRE(d);
  test::check_sql_order_delivery(*d, queue, id);
  rabbit->ack(*d);
  CHECK(test::outbox_rows(url) == 0);
}

TEST_CASE("rabbitmq relay: 3 relays x 4 workers, 20000 messages over 200 keys keep per-key order", "[rabbitmq]") {
  constexpr int kMessages = 20000, kKeys = 200;
  auto url = test::create_database("rmqorder");
  auto queue = test::unique_name("orders");
  test::rabbit_consumer(test::rabbitmq_url(), queue)->close();  // declares the queue
  test::fill_outbox(url, queue, kMessages, kKeys);
  auto log = "/tmp/" + queue + ".log";
  auto start = std::chrono::steady_clock::now();
  std::vector<test::Process> relays;
  for (int i = 0; i < 3; ++i) {
    relays.emplace_back(test::relay_drain_command(url, test::rabbitmq_url(), {"--workers", "4", "--batch-size", "500"}),
                        log);
  }
  for (auto& relay : relays) REQUIRE(relay.wait(4min) == std::optional<int>(0));
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN(kMessages << " messages relayed by 3 relays in " << secs << " s (" << kMessages / secs << " msg/s)");
  CHECK(test::outbox_rows(url) == 0);
  auto stats = test::consume_queue_into_effects(url, test::rabbitmq_url(), queue, kMessages);
  CHECK(stats.processed == kMessages);
  test::check_effects(url, kMessages);
}

namespace {
// Forwards to a real consumer but "loses" every 7th ack, so closing the
// consumer makes the broker redeliver messages the inbox already processed.
class LossyAcks : public brokers::Consumer {
 public:
  explicit LossyAcks(brokers::Consumer& inner) : inner_(inner) {}
  std::optional<brokers::Delivery> poll(std::chrono::milliseconds timeout) override { return inner_.poll(timeout); }
  void ack(const brokers::Delivery& d) override {
    if (++n_ % 7 != 0) inner_.ack(d);
  }
  bool dead_letter(const brokers::Delivery& d, const std::string& reason) override {
    return inner_.dead_letter(d, reason);
  }
  void close() override { inner_.close(); }

 private:
  brokers::Consumer& inner_;
  long n_ = 0;
};
}  // namespace

TEST_CASE("rabbitmq relay: InboxConsumer processes each message once under redelivery", "[rabbitmq]") {
  constexpr int kMessages = 3000, kKeys = 30;
  auto url = test::create_database("rmqinbox");
  auto queue = test::unique_name("orders");
  test::rabbit_consumer(test::rabbitmq_url(), queue)->close();
  test::fill_outbox(url, queue, kMessages, kKeys);
  test::Process relay(test::relay_drain_command(url, test::rabbitmq_url(), {"--workers", "4"}),
                      "/tmp/" + queue + ".log");
  REQUIRE(relay.wait(2min) == std::optional<int>(0));
  test::create_effects_table(url);

  consumer::ConsumeStats first_stats;
  {
    // Prefetch above the number of lost acks, or the unacked ones would fill the window.
    auto rabbit = test::rabbit_consumer(test::rabbitmq_url(), queue, 1000);
    LossyAcks lossy(*rabbit);
    consumer::InboxConsumer first(lossy, test::fast_commit(url), txbox::inbox::Inbox("billing"), test::record_effect);
    first.run({}, [](const consumer::ConsumeStats& s) { return s.processed >= kMessages / 2; });
    first_stats = first.stats();
    rabbit->close();  // unacked (lost acks + prefetched) go back to the queue
  }
  auto rabbit = test::rabbit_consumer(test::rabbitmq_url(), queue);
  consumer::InboxConsumer second(*rabbit, test::fast_commit(url), txbox::inbox::Inbox("billing"), test::record_effect);
  auto deadline = std::chrono::steady_clock::now() + 2min;
  second.run({}, [&](const consumer::ConsumeStats& s) {
    return first_stats.processed + s.processed >= kMessages || std::chrono::steady_clock::now() > deadline;
  });
  while (second.poll_once()) {
  }
  INFO("first processed " << first_stats.processed << ", second processed " << second.stats().processed
                          << " duplicates " << second.stats().duplicates);
  CHECK(second.stats().duplicates >= static_cast<uint64_t>(first_stats.processed / 7));
  CHECK(first_stats.processed + second.stats().processed == kMessages);
  test::check_effects(url, kMessages);
}
