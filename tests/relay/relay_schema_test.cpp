// The txbox schema name, end to end: two services keep their own outbox,
// dead letters and inbox in schemas of one database; each relay delivers its
// own schema's rows (own lanes, own wake-ups), the CLI works on the schema it
// is given, and a bad or missing schema is a clear error.
#include <catch2/catch.hpp>
#include <pqxx/pqxx>
#include <set>

#include "../fault/fault_support.hpp"
#include "kafka_support.hpp"
#include "support/process.hpp"
#include "txbox/core/schema_name.hpp"
#include "txbox/inbox/inbox.hpp"
#include "txbox/outbox/outbox.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

test::RunResult cli(std::vector<std::string> args, std::vector<std::string> env = {}) {
  args.insert(args.begin(), test::binary_path("txbox"));
  return test::run(args, 60s, env);
}

void enqueue(const std::string& url, const std::string& schema, const std::string& topic, int n) {
  txbox::outbox::Outbox outbox({.schema = txbox::SchemaName(schema)});
  std::vector<txbox::outbox::Message> messages;
  for (int i = 0; i < n; ++i)
    messages.push_back({.destination = topic, .key = "key-" + std::to_string(i % 10),
                        .payload = schema + ":" + std::to_string(i), .headers = {}, .message_id = {}});
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  outbox.enqueue(tx, messages);
  tx.commit();
}

long long rows(const std::string& url, const std::string& table) {
  return test::scalar(url, "SELECT count(*) FROM " + table);
}

std::set<std::string> distinct_ids(const std::vector<txbox::brokers::Delivery>& deliveries) {
  std::set<std::string> ids;
  for (const auto& d : deliveries) ids.insert(d.message.message_id);
  return ids;
}

}  // namespace

TEST_CASE("two schemas in one database: each relay delivers only its own outbox, with its own lanes and "
          "wake-ups",
          "[relay][schema]") {
  auto url = test::create_database("schemas");  // the default schema txbox, migrated
  for (const char* schema : {"orders", "payments"}) {
    auto r = cli({"migrate", "--database-url", url, "--schema", schema});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.output, Contains(std::string("txbox schema ") + schema + " at version"));
  }
  const auto orders_topic = test::unique_name("orders"), payments_topic = test::unique_name("payments"),
             other_topic = test::unique_name("other");
  enqueue(url, "orders", orders_topic, 300);
  enqueue(url, "payments", payments_topic, 300);
  enqueue(url, "txbox", other_topic, 50);
  CHECK(rows(url, "orders.outbox") == 300);
  CHECK(rows(url, "payments.outbox") == 300);

  // Both relays at once, woken only by commits (the poll interval is ten
  // minutes): if they shared lane locks, each would hold lanes the other
  // needs and neither outbox would drain.
  auto relay = [&](const std::string& schema, const std::string& log) {
    return test::Process({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                          "kafka://" + test::kafka_bootstrap(), "--schema", schema, "--poll-interval", "600000"},
                         log);
  };
  auto orders_relay = relay("orders", "/tmp/" + orders_topic + ".log");
  auto payments_relay = relay("payments", "/tmp/" + payments_topic + ".log");
  CHECK(test::wait_for([&] { return rows(url, "orders.outbox") == 0 && rows(url, "payments.outbox") == 0; },
                       120s));
  CHECK(rows(url, "txbox.outbox") == 50);  // no relay for the default schema runs here

  // An idle relay of each schema is woken by a commit in its own schema.
  for (int round = 0; round < 3; ++round) {
    enqueue(url, "orders", orders_topic, 1);
    enqueue(url, "payments", payments_topic, 1);
    CHECK(test::wait_for([&] { return rows(url, "orders.outbox") == 0 && rows(url, "payments.outbox") == 0; },
                         30s));
  }
  CHECK(orders_relay.running());
  CHECK(payments_relay.running());
  CHECK(distinct_ids(test::consume_topic(orders_topic, 303)).size() == 303);
  CHECK(distinct_ids(test::consume_topic(payments_topic, 303)).size() == 303);

  // The CLI on each schema: by flag and by TXBOX_SCHEMA.
  auto status = cli({"status", "--database-url", url, "--schema", "orders"});
  INFO(status.output);
  CHECK(status.exit_code == 0);
  CHECK_THAT(status.output, Contains("outbox rows: 0"));
  status = cli({"status", "--database-url", url}, {"TXBOX_SCHEMA=txbox"});
  CHECK_THAT(status.output, Contains("outbox rows: 50"));
  auto dead = cli({"dead-letters", "list", "--database-url", url}, {"TXBOX_SCHEMA=payments"});
  CHECK(dead.exit_code == 0);
  CHECK_THAT(dead.output, Contains("no dead letters"));
}

TEST_CASE("the inbox of a schema records its consumer's ids there", "[relay][schema]") {
  auto url = test::create_database("schema_inbox");
  REQUIRE(cli({"migrate", "--database-url", url, "--schema", "billing"}).exit_code == 0);
  txbox::inbox::Inbox inbox("billing.orders", {.schema = txbox::SchemaName("billing")});
  pqxx::connection conn(url);
  const std::string id = "0b0e7c8a-6f1d-4a55-9a57-2f6f3c3b9d11";
  int runs = 0;
  CHECK(inbox.process(conn, id, [&](pqxx::transaction_base&) { ++runs; }) == txbox::inbox::Outcome::processed);
  CHECK(inbox.process(conn, id, [&](pqxx::transaction_base&) { ++runs; }) == txbox::inbox::Outcome::duplicate);
  CHECK(runs == 1);
  CHECK(rows(url, "billing.inbox") == 1);
  CHECK(rows(url, "txbox.inbox") == 0);
}

TEST_CASE("a missing or malformed schema name is a clear error that changes nothing", "[relay][schema]") {
  auto url = test::create_database("schema_errors");
  auto missing = cli({"status", "--database-url", url, "--schema", "nosuch"});
  INFO(missing.output);
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.output, Contains("has no txbox schema 'nosuch'") &&
                                 Contains("txbox migrate --database-url URL --schema nosuch"));
  auto relay = test::run({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                          "kafka://" + test::kafka_bootstrap(), "--schema", "nosuch", "--drain"},
                         60s);
  INFO(relay.output);
  CHECK(relay.exit_code == 1);
  CHECK_THAT(relay.output, Contains("has no txbox schema 'nosuch'"));
  for (const char* bad : {"Orders", "a;drop", "pg_orders"}) {
    auto r = cli({"migrate", "--database-url", url, "--schema", bad});
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("--schema") && Contains("lower-case letters"));
    auto rr = test::run({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                         "kafka://" + test::kafka_bootstrap(), "--schema", bad},
                        60s);
    CHECK(rr.exit_code == 2);
    CHECK_THAT(rr.output, Contains("schema name"));
  }
  CHECK(test::scalar(url, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('Orders', 'pg_orders')") == 0);
}
