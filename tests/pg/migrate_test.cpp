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

TEST_CASE("migration 0004 creates the inbox claim function in any schema, twice is safe", "[migrate]") {
  auto url = test::create_database("migrate", false);
  auto first = test::run({test::binary_path("txbox"), "migrate", "--database-url", url, "--schema", "orders"});
  INFO(first.output);
  CHECK(first.exit_code == 0);
  CHECK_THAT(first.output, Contains("applied 0004_inbox_claim") && Contains("at version 4"));
  pqxx::connection conn(url);
  {
    pqxx::work tx(conn);
    CHECK(tx.exec1("SELECT count(*) FROM orders.inbox_claim('c', '{a,b,a}')")[0].as<int>() == 2);
    CHECK(tx.exec1("SELECT count(*) FROM orders.inbox_claim('c', '{a,b,c}')")[0].as<int>() == 1);
    CHECK(tx.exec1("SELECT to_regnamespace('txbox') IS NULL")[0].as<bool>());
  }
  CHECK(txbox::outbox::applied_versions(conn, txbox::SchemaName("orders")) == std::vector<int>{1, 2, 3, 4});
}

TEST_CASE("migration 0004 applied again keeps the partitioned inbox's claim function", "[migrate]") {
  auto url = test::create_database("migrate", true);
  auto partition = test::run({test::binary_path("txbox"), "inbox", "partition", "--database-url", url});
  INFO(partition.output);
  REQUIRE(partition.exit_code == 0);
  auto psql = test::run({"/usr/bin/psql", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-q", "-f",
                         std::string(TXBOX_SQL_DIR) + "/0004_inbox_claim.sql", url});
  INFO(psql.output);
  REQUIRE(psql.exit_code == 0);
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  CHECK_THAT(tx.exec1("SELECT prosrc FROM pg_proc WHERE oid = 'txbox.inbox_claim(text, text[])'::regprocedure")[0]
                 .as<std::string>(),
             Contains("pg_advisory_xact_lock"));
}
