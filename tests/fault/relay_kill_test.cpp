// Relay killed with SIGKILL in the middle of a drain, then restarted: nothing
// is missing, and the inbox consumer processes every message id once even
// though some were published twice.
#include <catch2/catch.hpp>
#include <csignal>
#include <pqxx/pqxx>
#include <thread>

#include "../relay/kafka_support.hpp"
#include "support/process.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/outbox/outbox.hpp"

namespace test = txbox::test;

namespace {
long long scalar(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<long long>();
}
}  // namespace

TEST_CASE("relay SIGKILLed mid-drain and restarted loses nothing and the inbox dedups", "[relay][fault]") {
  constexpr int kMessages = 20000;
  auto url = test::create_database("kill");
  auto topic = test::unique_name("orders");
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec0("CREATE TABLE effects (message_id text NOT NULL, payload text NOT NULL)");
    std::vector<txbox::outbox::Message> batch;
    for (int i = 0; i < kMessages; ++i)
      batch.push_back({topic, "key-" + std::to_string(i % 100), std::to_string(i), {}, {}});
    txbox::outbox::Outbox().enqueue(tx, batch);
    tx.commit();
  }
  std::vector<std::string> relay_args{test::binary_path("txbox-relay"), "--database-url", url,
                                      "--broker-url", "kafka://" + test::kafka_bootstrap(),
                                      "--workers", "2", "--batch-size", "100", "--drain"};
  {
    test::Process relay(relay_args, "/tmp/" + topic + "-relay1.log");
    // Kill it once a part (but not all) of the outbox has gone.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (scalar(url, "SELECT count(*) FROM txbox.outbox") > kMessages * 3 / 4 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    relay.signal(SIGKILL);
    CHECK(relay.wait(std::chrono::seconds(10)) == std::optional<int>(128 + SIGKILL));
  }
  long long left = scalar(url, "SELECT count(*) FROM txbox.outbox");
  INFO("rows left after the kill: " << left);
  CHECK(left > 0);
  CHECK(left < kMessages);
  {
    test::Process relay(relay_args, "/tmp/" + topic + "-relay2.log");
    CHECK(relay.wait(std::chrono::minutes(3)) == std::optional<int>(0));
  }
  CHECK(scalar(url, "SELECT count(*) FROM txbox.outbox") == 0);

  // Consume everything through the inbox.
  txbox::kafka::ConsumerOptions options;
  options.bootstrap_servers = test::kafka_bootstrap();
  options.group_id = test::unique_name("billing");
  options.topics = {topic};
  auto consumer = txbox::kafka::make_consumer(options);
  txbox::consumer::InboxConsumer inbox_consumer(
      // Asynchronous commit only to keep this test fast; the inbox logic is the same.
      *consumer, url + "?options=-c%20synchronous_commit%3Doff", txbox::inbox::Inbox("billing"),
      [](pqxx::transaction_base& tx, const txbox::brokers::Delivery& d) {
        tx.exec0("INSERT INTO effects VALUES (" + tx.quote(d.message.message_id) + ", " +
                 tx.quote(d.message.payload) + ")");
      });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  auto stats = inbox_consumer.run({}, [&](const txbox::consumer::ConsumeStats& s) {
    return s.processed >= kMessages || std::chrono::steady_clock::now() > deadline;
  });
  // Drain whatever duplicates are still in the topic.
  while (inbox_consumer.poll_once()) {
  }
  stats = inbox_consumer.stats();
  INFO("processed " << stats.processed << ", duplicates skipped " << stats.duplicates);
  CHECK(stats.processed == kMessages);
  CHECK(scalar(url, "SELECT count(*) FROM effects") == kMessages);
  CHECK(scalar(url, "SELECT count(DISTINCT payload) FROM effects") == kMessages);
  CHECK(scalar(url, "SELECT count(*) FROM txbox.inbox") == kMessages);
}
