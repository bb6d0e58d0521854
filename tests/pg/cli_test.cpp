// Bad input to the command-line programs: one clear error line, a non-zero
// exit, nothing changed.
#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "support/process.hpp"
#include "support/test_env.hpp"

using Catch::Matchers::Contains;
namespace test = txbox::test;

namespace {
int lines(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n;
}
test::RunResult relay(std::vector<std::string> args) {
  args.insert(args.begin(), test::binary_path("txbox-relay"));
  return test::run(args, std::chrono::seconds(30));
}
long long outbox_rows(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx.exec1("SELECT count(*) FROM txbox.outbox")[0].as<long long>();
}
std::string database_with_one_row() {
  auto url = test::create_database("cli");
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  tx.exec0("INSERT INTO txbox.outbox (destination, message_key) VALUES ('orders', 'k')");
  tx.commit();
  return url;
}
}  // namespace

TEST_CASE("relay: unreachable database", "[cli]") {
  auto r = relay({"--database-url", "postgresql://postgres:secret@127.0.0.1:1/nowhere", "--broker-url",
                  "kafka://127.0.0.1:9", "--drain"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("txbox-relay: error: cannot connect to PostgreSQL") &&
                           Contains("check --database-url"));
  CHECK_THAT(r.output, !Contains("secret"));
}

TEST_CASE("relay: unknown broker scheme changes nothing", "[cli]") {
  auto url = database_with_one_row();
  auto r = relay({"--database-url", url, "--broker-url", "mqtt://127.0.0.1:1883", "--drain"});
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("unknown broker scheme 'mqtt'") && Contains("kafka://"));
  CHECK(outbox_rows(url) == 1);
}

TEST_CASE("relay: malformed broker URL changes nothing", "[cli]") {
  auto url = database_with_one_row();
  for (std::string bad : {"kafka://127.0.0.1:notaport", "127.0.0.1:9092", "kafka://"}) {
    auto r = relay({"--database-url", url, "--broker-url", bad, "--drain"});
    INFO(bad << ": " << r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK_THAT(r.output, Contains("malformed broker URL"));
  }
  CHECK(outbox_rows(url) == 1);
}

TEST_CASE("relay: migrations not applied", "[cli]") {
  auto url = test::create_database("cli", false);
  auto r = relay({"--database-url", url, "--broker-url", "kafka://127.0.0.1:9", "--drain"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("no txbox schema") && Contains("txbox migrate"));
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  CHECK(tx.exec1("SELECT count(*) FROM pg_namespace WHERE nspname = 'txbox'")[0].as<int>() == 0);
}

TEST_CASE("relay: bad flags and missing settings", "[cli]") {
  auto r = relay({"--bogus"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--bogus") && Contains("--help"));
  r = relay({"--database-url", "postgresql://x/y", "--broker-url", "kafka://h:1", "--workers", "0"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--workers 0 is out of range"));
  r = relay({"--broker-url", "kafka://h:1"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("no database given"));
  r = relay({"--config", "/nonexistent/relay.toml"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("/nonexistent/relay.toml"));
  r = relay({"--database-url", "postgresql://x/y", "--broker-url", "kafka://h:1", "--kafka-property", "novalue"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("'novalue' is not NAME=VALUE"));
}

TEST_CASE("relay: --help documents every flag", "[cli]") {
  auto r = relay({"--help"});
  CHECK(r.exit_code == 0);
  for (const char* flag : {"--database-url", "--broker-url", "--workers", "--batch-size", "--poll-interval",
                           "--drain", "--config", "--compression", "--kafka-property", "TXBOX_DATABASE_URL",
                           "TXBOX_BROKER_URL", "--shutdown-timeout", "--publish-timeout"})
    CHECK_THAT(r.output, Contains(flag));
}

TEST_CASE("txbox: bad usage and unreachable database", "[cli]") {
  auto r = test::run({test::binary_path("txbox")});
  CHECK(r.exit_code == 2);
  r = test::run({test::binary_path("txbox"), "migrate"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--database-url"));
  r = test::run({test::binary_path("txbox"), "migrate", "--database-url", "postgresql://127.0.0.1:1/x"});
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("cannot connect to PostgreSQL"));
}
