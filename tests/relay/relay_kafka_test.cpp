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

TEST_CASE("bad rows are dead-lettered with a reason and never stall the relay", "[relay][dead_letters]") {
  auto url = test::create_database("badrows");
  auto topic = test::unique_name("orders");
  pqxx::connection conn(url);
  {
    pqxx::work tx(conn);
    auto q = tx.quote(topic);
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, payload) VALUES ('', 'k1', 'no destination')");
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, payload, headers) VALUES (" + q +
             ", 'k2', 'array headers', '[\"a\"]')");
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, payload, headers) VALUES (" + q +
             ", 'k3', 'number header', '{\"n\": 1}')");
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, payload) VALUES (" + q +
             ", 'k4', convert_to(repeat('x', 20000), 'UTF8'))");
    for (int i = 0; i < 10; ++i)
      tx.exec0("INSERT INTO txbox.outbox (destination, message_key, payload) VALUES (" + q + ", 'k5', 'good " +
               std::to_string(i) + "')");
    tx.commit();
  }
  auto options = test::kafka_relay_options(url);
  options.broker_properties["message.max.bytes"] = "10000";
  options.publish_dead_letters = true;
  Relay relay(options);
  auto stats = relay.run({});
  CHECK(stats.published == 10);
  CHECK(stats.dead_lettered == 4);
  CHECK(outbox_rows(conn) == 0);

  pqxx::nontransaction tx(conn);
  auto reason = [&](const std::string& key) {
    auto rows = tx.exec("SELECT error_class || ': ' || last_error FROM txbox.dead_letters WHERE message_key = " +
                        tx.quote(key));
    return rows.empty() ? std::string("(none)") : rows[0][0].as<std::string>();
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(reason("k1"), Contains("permanent") && Contains("destination is empty"));
  CHECK_THAT(reason("k2"), Contains("permanent") && Contains("headers must be a JSON object"));
  CHECK_THAT(reason("k3"), Contains("permanent") && Contains("header 'n'"));
  CHECK_THAT(reason("k4"), Contains("permanent") && Contains("message.max.bytes"));
  // The good messages arrived; the publishable dead letters went to <topic>.dlq too.
  CHECK(test::consume_topic(topic, 10, std::chrono::seconds(60)).size() == 10);
  auto letters = test::consume_topic(topic + ".dlq", 2, std::chrono::seconds(60));
  REQUIRE(letters.size() == 2);
  for (const auto& letter : letters) {
    CHECK(test::header(letter.message, "dlq-original-destination") == topic);
    CHECK(test::header(letter.message, "dlq-attempts") == "1");
    CHECK(test::header(letter.message, "dlq-error-class") == "permanent");
    CHECK_FALSE(test::header(letter.message, "dlq-error").empty());
    CHECK(test::header(letter.message, "dlq-original-position").empty());  // never in the broker
    CHECK_THAT(test::header(letter.message, "dlq-timestamp"), Catch::Matchers::EndsWith("Z"));
  }
}
