// The walking skeleton end to end: outbox rows -> txbox-relay -> Kafka (the
// librdkafka mock cluster process) -> a consumer.
#include <catch2/catch.hpp>
#include <map>
#include <pqxx/pqxx>
#include <set>

#include "fault/fault_support.hpp"
#include "kafka_support.hpp"
#include "support/process.hpp"
#include "txbox/outbox/outbox.hpp"

namespace test = txbox::test;
using txbox::relay::Relay;

TEST_CASE("a plain-SQL insert is delivered with topic, key, value, headers and message id", "[relay]") {
  auto url = test::create_database("relay");
  auto topic = test::unique_name("orders");
  pqxx::connection conn(url);
  auto message_id = test::insert_sql_order_row(url, topic);
  Relay relay(test::kafka_relay_options(url));
  auto stats = relay.run({});
  CHECK(stats.published == 1);
  CHECK(test::outbox_rows(conn) == 0);

  auto messages = test::consume_topic(topic, 1);
  REQUIRE(messages.size() == 1);
  test::check_sql_order_delivery(messages[0], topic, message_id);
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
  test::fill_outbox(url, topic, kMessages, kKeys);  // payload "<key>:<sequence within key>"
  std::vector<test::Process> relays;
  for (int p = 0; p < 3; ++p)
    relays.emplace_back(test::relay_command(url, test::kafka_bootstrap(), {"--workers", "4", "--batch-size", "200"}),
                        "/tmp/" + topic + "-relay" + std::to_string(p) + ".log");
  for (auto& relay : relays) CHECK(relay.wait(std::chrono::minutes(5)) == std::optional<int>(0));
  CHECK(test::outbox_rows(conn) == 0);

  auto messages = test::consume_topic(topic, kMessages);
  std::set<std::string> ids;
  test::PerKeySequence first_seen_order;
  std::set<std::string> seen_payloads;
  for (const auto& d : messages) {
    ids.insert(d.message.message_id);
    if (!seen_payloads.insert(d.message.payload).second) continue;  // a duplicate: allowed
    first_seen_order.add(d.message);
  }
  CHECK(ids.size() == kMessages);
  CHECK(seen_payloads.size() == kMessages);
  CHECK(first_seen_order.violations() == 0);
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
  CHECK(test::outbox_rows(conn) == 0);

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
