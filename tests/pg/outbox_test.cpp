#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "support/outbox_sql.hpp"
#include "support/test_env.hpp"
#include "txbox/outbox/outbox.hpp"

using txbox::outbox::Message;
using txbox::outbox::Outbox;

TEST_CASE("enqueue writes a row in the caller's transaction, committed by the caller", "[outbox]") {
  pqxx::connection conn(txbox::test::create_database("outbox"));
  Outbox outbox;
  std::string id;
  {
    pqxx::work tx(conn);
    id = outbox.enqueue(tx, Message{"orders", "order-1", std::string("a\0b", 3),
                                    {{"content-type", "application/octet-stream"}}, {}});
    tx.commit();
  }
  pqxx::nontransaction tx(conn);
  auto row = tx.exec1(
      "SELECT message_id::text, destination, message_key, payload, headers->>'content-type', "
      "attempts FROM txbox.outbox");
  CHECK(row[0].as<std::string>() == id);
  CHECK(row[1].as<std::string>() == "orders");
  CHECK(row[2].as<std::string>() == "order-1");
  CHECK(pqxx::binarystring(row[3]).str() == std::string("a\0b", 3));
  CHECK(row[4].as<std::string>() == "application/octet-stream");
  CHECK(row[5].as<int>() == 0);
}

TEST_CASE("rolling back the caller's transaction leaves no outbox row", "[outbox]") {
  pqxx::connection conn(txbox::test::create_database("outbox"));
  Outbox outbox;
  {
    pqxx::work tx(conn);
    tx.exec0("CREATE TABLE orders (id int)");
    tx.commit();
  }
  {
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO orders VALUES (1)");
    outbox.enqueue(tx, Message{"orders", "order-1", "{}", {}, {}});
    // destroyed without commit: rolled back, as libpqxx does
  }
  CHECK(txbox::test::outbox_rows(conn) == 0);
  pqxx::nontransaction tx(conn);
  CHECK(tx.exec1("SELECT count(*) FROM orders")[0].as<int>() == 0);
}

TEST_CASE("a batch is one statement and keeps order, explicit ids and NULL keys", "[outbox]") {
  pqxx::connection conn(txbox::test::create_database("outbox"));
  Outbox outbox;
  std::vector<Message> batch;
  for (int i = 0; i < 1000; ++i)
    batch.push_back(Message{"orders", i % 2 ? std::optional<std::string>("k" + std::to_string(i % 10)) : std::nullopt,
                            "payload-" + std::to_string(i), {{"n", std::to_string(i)}}, {}});
  batch[5].message_id = "123e4567-e89b-12d3-a456-426614174000";
  std::vector<std::string> ids;
  {
    // A statement-level trigger counts INSERT statements: the batch must be one.
    pqxx::work tx(conn);
    tx.exec0("CREATE TABLE insert_statements (n int)");
    tx.exec0(
        "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO insert_statements VALUES (1); RETURN NULL; END $$");
    tx.exec0(
        "CREATE TRIGGER count_insert AFTER INSERT ON txbox.outbox FOR EACH STATEMENT EXECUTE "
        "FUNCTION count_insert()");
    ids = outbox.enqueue(tx, batch);
    CHECK(tx.exec1("SELECT count(*) FROM insert_statements")[0].as<int>() == 1);
    tx.commit();
  }
  REQUIRE(ids.size() == 1000);
  CHECK(ids[5] == "123e4567-e89b-12d3-a456-426614174000");
  pqxx::nontransaction tx(conn);
  auto rows = tx.exec("SELECT message_id::text, message_key, headers->>'n' FROM txbox.outbox ORDER BY id");
  REQUIRE(rows.size() == 1000);
  for (int i = 0; i < 1000; ++i) {
    CHECK(rows[i][0].as<std::string>() == ids[i]);
    CHECK(rows[i][1].is_null() == (i % 2 == 0));
    CHECK(rows[i][2].as<int>() == i);
  }
}

TEST_CASE("invalid messages are rejected before anything is written", "[outbox]") {
  using Catch::Matchers::Contains;
  pqxx::connection conn(txbox::test::create_database("outbox"));
  Outbox outbox;
  pqxx::work tx(conn);
  CHECK_THROWS_WITH(outbox.enqueue(tx, Message{"", {}, "x", {}, {}}), Contains("empty destination"));
  CHECK_THROWS_WITH(outbox.enqueue(tx, Message{"d", {}, "x", {}, std::string("not-a-uuid")}),
                    Contains("'not-a-uuid' is not a UUID"));
  CHECK_THROWS_WITH(outbox.enqueue(tx, Message{"d", {}, "x", {{"h", "\xff\xfe"}}, {}}),
                    Contains("not valid UTF-8"));
  CHECK(tx.exec1("SELECT count(*) FROM txbox.outbox")[0].as<int>() == 0);
}

TEST_CASE("the plain-SQL contract: only destination, key, payload and headers", "[outbox]") {
  pqxx::connection conn(txbox::test::create_database("outbox"));
  pqxx::work tx(conn);
  tx.exec0(
      "INSERT INTO txbox.outbox (destination, message_key, payload, headers) VALUES ('orders', "
      "'order-42', convert_to('{\"id\":42}','UTF8'), '{\"content-type\":\"application/json\"}')");
  auto row = tx.exec1("SELECT message_id IS NOT NULL, lane BETWEEN 0 AND 255, attempts, next_attempt_at IS NULL FROM txbox.outbox");
  CHECK(row[0].as<bool>());
  CHECK(row[1].as<bool>());
  CHECK(row[2].as<int>() == 0);
  CHECK(row[3].as<bool>());
  // Same key, same lane; the lane is a pure function of the key.
  tx.exec0("INSERT INTO txbox.outbox (destination, message_key) VALUES ('orders', 'order-42')");
  CHECK(tx.exec1("SELECT count(DISTINCT lane) FROM txbox.outbox")[0].as<int>() == 1);
}
