// The walking skeleton end to end: outbox rows -> txbox-relay -> Kafka (the
// librdkafka mock cluster process) -> a consumer.
#include <catch2/catch.hpp>
#include <map>
#include <pqxx/pqxx>
#include <set>

#include "kafka_support.hpp"
#include "support/process.hpp"
#include "txbox/outbox/outbox.hpp"

namespace test = txbox::test;
using txbox::relay::Relay;

namespace {
long long outbox_rows(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  return tx.exec1("SELECT count(*) FROM txbox.outbox")[0].as<long long>();
}
}  // namespace

TEST_CASE("a plain-SQL insert is delivered with topic, key, value, headers and message id", "[relay]") {
  auto url = test::create_database("relay");
  auto topic = test::unique_name("orders");
  pqxx::connection conn(url);
  std::string message_id;
  {
    pqxx::work tx(conn);
    message_id = tx.exec1(
                       "INSERT INTO txbox.outbox (destination, message_key, payload, headers) VALUES (" +
                       tx.quote(topic) +
                       ", 'order-42', convert_to('{\"id\":42}','UTF8'), "
                       "'{\"content-type\":\"application/json\"}') RETURNING message_id::text")[0]
                     .as<std::string>();
    tx.commit();
  }
  Relay relay(test::kafka_relay_options(url));
  auto stats = relay.run({});
  CHECK(stats.published == 1);
  CHECK(outbox_rows(conn) == 0);

  auto messages = test::consume_topic(topic, 1);
  REQUIRE(messages.size() == 1);
  const auto& m = messages[0];
  CHECK(m.source == topic);
  CHECK(m.message.key == std::optional<std::string>("order-42"));
  CHECK(m.message.payload == "{\"id\":42}");
  CHECK(m.message.message_id == message_id);
  CHECK(test::header(m.message, "content-type") == "application/json");
}

TEST_CASE("a rolled-back transaction publishes nothing", "[relay]") {
  auto url = test::create_database("relay");
  auto topic = test::unique_name("orders");
  pqxx::connection conn(url);
  txbox::outbox::Outbox outbox;
  {
    pqxx::work tx(conn);
    outbox.enqueue(tx, {topic, "k", "rolled back", {}, {}});
    tx.abort();
  }
  {
    pqxx::work tx(conn);
    outbox.enqueue(tx, {topic, "k", "committed", {}, {}});
    tx.commit();
  }
  Relay relay(test::kafka_relay_options(url));
  CHECK(relay.run({}).published == 1);
  auto messages = test::consume_topic(topic, 1, std::chrono::seconds(60));
  REQUIRE(messages.size() == 1);
  CHECK(messages[0].message.payload == "committed");
}

TEST_CASE("3 relay processes x 4 workers keep per-key order over 50,000 messages", "[relay][order]") {
  constexpr int kMessages = 50000, kKeys = 500;
  auto url = test::create_database("relay");
  auto topic = test::unique_name("orders");
  pqxx::connection conn(url);
  txbox::outbox::Outbox outbox;
  std::vector<txbox::outbox::Message> batch;
  for (int i = 0; i < kMessages; ++i) {
    // Payload "<key>:<sequence within key>".
    std::string key = "key-" + std::to_string(i % kKeys);
    batch.push_back({topic, key, key + ":" + std::to_string(i / kKeys), {}, {}});
    if (batch.size() == 5000) {
      pqxx::work tx(conn);
      outbox.enqueue(tx, batch);
      tx.commit();
      batch.clear();
    }
  }
  std::vector<test::Process> relays;
  for (int p = 0; p < 3; ++p)
    relays.emplace_back(std::vector<std::string>{test::binary_path("txbox-relay"), "--database-url", url,
                                                 "--broker-url", "kafka://" + test::kafka_bootstrap(),
                                                 "--workers", "4", "--batch-size", "200", "--drain",
                                                 "--poll-interval", "20"},
                        "/tmp/" + topic + "-relay" + std::to_string(p) + ".log");
  for (auto& relay : relays) CHECK(relay.wait(std::chrono::minutes(5)) == std::optional<int>(0));
  CHECK(outbox_rows(conn) == 0);

  auto messages = test::consume_topic(topic, kMessages);
  std::set<std::string> ids;
  std::map<std::string, int> next_sequence;  // per key: the next first-seen sequence expected
  std::set<std::string> seen_payloads;
  int order_violations = 0;
  for (const auto& d : messages) {
    ids.insert(d.message.message_id);
    if (!seen_payloads.insert(d.message.payload).second) continue;  // a duplicate: allowed
    auto colon = d.message.payload.find(':');
    std::string key = d.message.payload.substr(0, colon);
    int sequence = std::stoi(d.message.payload.substr(colon + 1));
    REQUIRE(d.message.key == std::optional<std::string>(key));
    if (sequence != next_sequence[key]) ++order_violations;
    next_sequence[key] = sequence + 1;
  }
  CHECK(ids.size() == kMessages);
  CHECK(seen_payloads.size() == kMessages);
  CHECK(order_violations == 0);
}
