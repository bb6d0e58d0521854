#include "support/test_env.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <pqxx/pqxx>
#include <random>

#include "txbox/outbox/schema.hpp"

namespace txbox::test {

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value)
    FAIL(fmt::format("{} is not set: run the tests with scripts/test.sh, or start the servers "
                     "with `eval $(scripts/test-env.sh start DIR)`",
                     name));
  return value;
}

std::string pg_admin_url() { return required_env("TXBOX_TEST_PG_URL"); }
std::string kafka_bootstrap() { return required_env("TXBOX_TEST_KAFKA_BOOTSTRAP"); }
std::string rabbitmq_url() { return required_env("TXBOX_TEST_RABBITMQ_URL"); }
std::string nats_url() { return required_env("TXBOX_TEST_NATS_URL"); }
std::string redis_url() { return required_env("TXBOX_TEST_REDIS_URL"); }

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}() % 100000;
  return fmt::format("{}_{}_{}_{}", prefix, getpid(), counter++, salt);
}

namespace {
std::string with_database(const std::string& url, const std::string& database) {
  // postgresql://user@host:port/db?params -> replace the db part.
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  auto query = url.find('?');
  std::string base = url.substr(0, slash == std::string::npos ? query : slash);
  std::string tail = query == std::string::npos ? "" : url.substr(query);
  return base + "/" + database + tail;
}
}  // namespace

std::string create_database(const std::string& prefix, bool migrate) {
  std::string name = unique_name(prefix);
  {
    pqxx::connection admin(pg_admin_url());
    pqxx::nontransaction tx(admin);
    tx.exec0("CREATE DATABASE " + tx.quote_name(name));
  }
  std::string url = with_database(pg_admin_url(), name);
  if (migrate) {
    pqxx::connection conn(url);
    outbox::migrate(conn);
  }
  return url;
}

std::string binary_path(const std::string& name) {
  std::string dir = TXBOX_BINARY_DIR;
  if (name == "txbox-relay" || name == "txbox") return dir + "/relay/" + name;
  if (name == "txbox-kafka-mock") return dir + "/scripts/" + name;
  if (name == "txbox-test-consumer") return dir + "/tests/consumer/" + name;
  return dir + "/" + name;
}

}  // namespace txbox::test
