#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/outbox/schema.hpp"

using Catch::Matchers::Contains;
namespace test = txbox::test;

TEST_CASE("txbox migrate applies the schema and is safe to run twice", "[migrate]") {
  auto url = test::create_database("migrate", false);
  auto first = test::run({test::binary_path("txbox"), "migrate", "--database-url", url});
  INFO(first.output);
  CHECK(first.exit_code == 0);
  CHECK_THAT(first.output, Contains("applied 0001_init"));
  auto second = test::run({test::binary_path("txbox"), "migrate", "--database-url", url});
  CHECK(second.exit_code == 0);
  CHECK_THAT(second.output, Contains("nothing to do"));
  pqxx::connection conn(url);
  CHECK(txbox::outbox::applied_versions(conn).size() == txbox::outbox::migrations().size());
}

TEST_CASE("migrations applied with plain psql are recognised by txbox migrate", "[migrate]") {
  auto url = test::create_database("migrate", false);
  for (const auto& m : txbox::outbox::migrations()) {
    auto file = std::string(TXBOX_SQL_DIR) + "/" + std::string(4 - std::to_string(m.version).size(), '0') +
                std::to_string(m.version) + "_" + m.name + ".sql";
    auto psql = test::run({"/usr/bin/psql", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-q", "-f", file, url});
    INFO(psql.output);
    REQUIRE(psql.exit_code == 0);
  }
  auto result = test::run({test::binary_path("txbox"), "migrate", "--database-url", url});
  CHECK(result.exit_code == 0);
  CHECK_THAT(result.output, Contains("nothing to do"));
}

TEST_CASE("txbox migrate refuses a database with a version it does not know", "[migrate]") {
  auto url = test::create_database("migrate", true);
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO txbox.schema_version (version, name) VALUES (999, 'from_the_future')");
    tx.commit();
  }
  auto result = test::run({test::binary_path("txbox"), "migrate", "--database-url", url});
  CHECK(result.exit_code == 1);
  CHECK_THAT(result.output, Contains("999") && Contains("does not know") && Contains("nothing was changed"));
}
