#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "txbox/core/error.hpp"
#include "txbox/relay/cli.hpp"
#include "txbox/relay/options.hpp"

using Catch::Matchers::Contains;
using txbox::relay::RelayOptions;

namespace {
RelayOptions valid() {
  RelayOptions o;
  o.database_url = "postgresql://localhost/db";
  o.broker_url = "kafka://localhost:9092";
  return o;
}
std::string write_file(const std::string& text) {
  char path[] = "/tmp/txbox-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST_CASE("relay options: defaults are valid once URLs are given", "[options]") {
  CHECK_NOTHROW(txbox::relay::validate(valid()));
  CHECK_THROWS_WITH(txbox::relay::validate(RelayOptions{}), Contains("--database-url"));
}

TEST_CASE("relay options: out-of-range values name the flag", "[options]") {
  auto o = valid();
  o.workers = 0;
  CHECK_THROWS_WITH(txbox::relay::validate(o), Contains("--workers 0"));
  o = valid();
  o.batch_size = -1;
  CHECK_THROWS_WITH(txbox::relay::validate(o), Contains("--batch-size"));
}

TEST_CASE("relay options: --broker-property and its deprecated aliases", "[options]") {
  auto o = valid();
  txbox::relay::add_broker_property(o, "linger.ms=10", "--broker-property");
  txbox::relay::add_broker_property(o, "client.id=a=b", "--kafka-property");
  txbox::relay::set_kafka_compression(o, "lz4");
  CHECK(o.broker_properties.at("linger.ms") == "10");
  CHECK(o.broker_properties.at("client.id") == "a=b");
  CHECK(o.broker_properties.at("compression.type") == "lz4");
  CHECK_THROWS_AS(txbox::relay::add_broker_property(o, "novalue", "--broker-property"), txbox::UsageError);
  CHECK_THROWS_WITH(txbox::relay::add_broker_property(o, "=x", "--broker-property"),
                    Contains("--broker-property '=x' is not NAME=VALUE"));
}

TEST_CASE("relay config file: keys, broker properties and errors", "[options]") {
  auto path = write_file(
      "broker-url = \"kafka://k:1\"\nworkers = 7\nbatch_size = 99\npoll-interval = 5\nschema = \"orders\"\n"
      "[broker]\n\"linger.ms\" = 20\n\"enable.idempotence\" = true\n");
  RelayOptions o;
  std::vector<std::string> warnings;
  txbox::relay::load_config_file(path, o, &warnings);
  CHECK(warnings.empty());
  CHECK(o.schema.name() == "orders");
  CHECK(o.broker_url == "kafka://k:1");
  CHECK(o.workers == 7);
  CHECK(o.batch_size == 99);
  CHECK(o.poll_interval.count() == 5);
  CHECK(o.broker_properties.at("linger.ms") == "20");
  CHECK(o.broker_properties.at("enable.idempotence") == "true");
  std::remove(path.c_str());

  auto bad_key = write_file("wrokers = 3\n");
  CHECK_THROWS_WITH(txbox::relay::load_config_file(bad_key, o), Contains("unknown key 'wrokers'"));
  auto bad_type = write_file("workers = \"three\"\n");
  CHECK_THROWS_WITH(txbox::relay::load_config_file(bad_type, o), Contains("'workers' must be an integer"));
  auto bad_syntax = write_file("workers = = 3\n");
  CHECK_THROWS_WITH(txbox::relay::load_config_file(bad_syntax, o), Contains(bad_syntax + ":1:"));
  CHECK_THROWS_AS(txbox::relay::load_config_file(bad_syntax, o), txbox::ConfigError);
  auto bad_schema = write_file("schema = \"Orders-1\"\n");
  CHECK_THROWS_WITH(txbox::relay::load_config_file(bad_schema, o), Contains("key 'schema'"));
}

TEST_CASE("relay config file: [kafka] and compression still work, with a warning", "[options]") {
  auto path = write_file("compression = \"zstd\"\n[kafka]\n\"linger.ms\" = 20\n");
  RelayOptions o;
  std::vector<std::string> warnings;
  txbox::relay::load_config_file(path, o, &warnings);
  CHECK(o.broker_properties.at("linger.ms") == "20");
  CHECK(o.broker_properties.at("compression.type") == "zstd");
  REQUIRE(warnings.size() == 2);
  CHECK_THAT(warnings[0], Contains("deprecated"));
  CHECK_THAT(warnings[1], Contains("[broker]"));
  std::remove(path.c_str());
}

TEST_CASE("secrets are redacted and errors are one line", "[cli]") {
  CHECK(txbox::relay::redact_url("postgresql://u:secret@h/db") == "postgresql://***@h/db");
  CHECK(txbox::relay::redact_url("host=h password=secret dbname=x") == "host=h password=*** dbname=x");
  CHECK(txbox::relay::one_line("could not connect\n\tIs the server running?\n") ==
        "could not connect Is the server running?");
}
