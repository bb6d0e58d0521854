#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

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
  o = valid();
  o.compression = "brotli";
  CHECK_THROWS_WITH(txbox::relay::validate(o), Contains("--compression 'brotli'"));
}

TEST_CASE("relay config file: keys, kafka properties and errors", "[options]") {
  auto path = write_file(
      "broker-url = \"kafka://k:1\"\nworkers = 7\nbatch_size = 99\npoll-interval = 5\n"
      "[kafka]\n\"linger.ms\" = 20\n\"enable.idempotence\" = true\n");
  RelayOptions o;
  txbox::relay::load_config_file(path, o);
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
}

TEST_CASE("secrets are redacted and errors are one line", "[cli]") {
  CHECK(txbox::relay::redact_url("postgresql://u:secret@h/db") == "postgresql://***@h/db");
  CHECK(txbox::relay::redact_url("host=h password=secret dbname=x") == "host=h password=*** dbname=x");
  CHECK(txbox::relay::one_line("could not connect\n\tIs the server running?\n") ==
        "could not connect Is the server running?");
}
