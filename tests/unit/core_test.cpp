// The pieces every component shares: the error family and its exit codes,
// the schema name and how txbox's SQL moves into another schema, and the
// broker registry's answers to URLs it cannot serve (no server needed).
#include <catch2/catch.hpp>

#include "txbox/brokers/broker.hpp"
#include "txbox/core/error.hpp"
#include "txbox/core/schema_name.hpp"
#include "txbox/core/version.hpp"
#include "txbox/registry/registry.hpp"

using Catch::Matchers::Contains;
using txbox::ErrorKind;
using txbox::SchemaName;

TEST_CASE("errors: kind, retryable flag, hint and exit code", "[core]") {
  txbox::Error down(ErrorKind::unavailable, "broker down", "start it");
  CHECK(down.retryable());
  CHECK(std::string(down.what()) == "broker down; start it");
  CHECK(down.hint() == "start it");
  CHECK_FALSE(txbox::Error(ErrorKind::permanent, "too large").retryable());
  CHECK_FALSE(txbox::Error(ErrorKind::unavailable, "schema missing", txbox::Retryable{false}).retryable());
  CHECK(txbox::exit_code(ErrorKind::usage) == 2);
  CHECK(txbox::exit_code(ErrorKind::config) == 2);
  CHECK(txbox::exit_code(ErrorKind::unavailable) == 1);
  CHECK(txbox::exit_code(ErrorKind::permanent) == 1);
  CHECK(txbox::exit_code(ErrorKind::internal) == 1);
  CHECK(std::string(txbox::to_string(ErrorKind::config)) == "config");
  // Adapters' errors are part of the family.
  txbox::brokers::BrokerError refused(ErrorKind::config, "login refused", "check the user");
  const txbox::Error& as_error = refused;
  CHECK(as_error.kind() == ErrorKind::config);
  CHECK(std::string(txbox::kVersion).size() >= 5);
}

TEST_CASE("schema names: the rules, each with its fix", "[core]") {
  CHECK(SchemaName().name() == "txbox");
  CHECK(SchemaName("orders").name() == "orders");
  CHECK(SchemaName("_svc_2").quoted() == "\"_svc_2\"");
  CHECK(SchemaName("orders").qualify("outbox") == "\"orders\".\"outbox\"");
  CHECK(SchemaName("orders").wakeup_channel() == "orders_outbox");
  CHECK(SchemaName().wakeup_channel() == "txbox_outbox");  // unchanged for the default schema
  for (const char* bad : {"", "Orders", "2orders", "or-ders", "or\"ders", "pg_catalog", "a b"}) {
    INFO(bad);
    CHECK_THROWS_AS(SchemaName(bad), txbox::UsageError);
    CHECK_THROWS_WITH(SchemaName(bad), Contains("--schema orders"));
  }
  CHECK_THROWS_WITH(SchemaName(std::string(49, 'a')), Contains("too long"));
  CHECK_NOTHROW(SchemaName(std::string(48, 'a')));
}

TEST_CASE("schema names: txbox's SQL moves into another schema, identifiers only", "[core]") {
  const std::string sql =
      "CREATE SCHEMA IF NOT EXISTS txbox;\n"
      "INSERT INTO txbox.outbox (destination) VALUES ($1);\n"
      "SELECT pg_notify('txbox_outbox', ''), pg_sequence_last_value('txbox.relay_wakeup_until');\n"
      "-- mytxbox.x and txbox_other.y stay\n"
      "SELECT * FROM mytxbox.x, txbox_other.y";
  CHECK(SchemaName().adapt(sql) == sql);
  const std::string moved = SchemaName("orders").adapt(sql);
  CHECK_THAT(moved, Contains("CREATE SCHEMA IF NOT EXISTS \"orders\";"));
  CHECK_THAT(moved, Contains("INSERT INTO \"orders\".outbox"));
  CHECK_THAT(moved, Contains("pg_notify('orders_outbox', '')"));
  CHECK_THAT(moved, Contains("pg_sequence_last_value('\"orders\".relay_wakeup_until')"));
  CHECK_THAT(moved, Contains("mytxbox.x") && Contains("txbox_other.y"));
  CHECK_THAT(moved, !Contains(" txbox.") && !Contains("'txbox."));
}

TEST_CASE("broker registry: unknown schemes and malformed URLs are usage errors naming the fix", "[core]") {
  using txbox::brokers::check_broker_url;
  CHECK_THROWS_AS(check_broker_url("mqtt://h:1883"), txbox::UsageError);
  CHECK_THROWS_WITH(check_broker_url("mqtt://u:secret@h:1883"),
                    Contains("unknown broker scheme 'mqtt'") && Contains("kafka://") && Contains("amqp://") &&
                        Contains("nats://") && Contains("redis://") && !Contains("secret"));
  CHECK_THROWS_AS(check_broker_url("kafka://h:notaport"), txbox::UsageError);
  for (const char* ok : {"kafka://h:9092", "amqp://u:p@h/", "nats://h:4222", "redis://h:6379"})
    CHECK_NOTHROW(check_broker_url(ok));
  CHECK_FALSE(txbox::brokers::dead_letters_natively("kafka://h:9092"));
  CHECK(txbox::brokers::dead_letters_natively("amqp://u:p@h/"));
  CHECK(txbox::brokers::supported_broker_urls().size() == 4);
  // Options a broker does not know are refused before anything connects.
  CHECK_THROWS_WITH(txbox::brokers::open_publisher("kafka://127.0.0.1:1?bogus=1"),
                    Contains("unknown option 'bogus'") && Contains("--broker-property"));
  CHECK_THROWS_AS(txbox::brokers::open_consumer("nats://127.0.0.1:1", {.source = "s",
                                                                       .group = "g",
                                                                       .properties = {{"x", "y"}}}),
                  txbox::ConfigError);
}
