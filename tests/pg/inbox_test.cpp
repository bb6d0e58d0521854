#include <catch2/catch.hpp>
#include <pqxx/pqxx>
#include <stdexcept>
#include <thread>

#include "support/test_env.hpp"
#include "txbox/core/error.hpp"
#include "txbox/inbox/inbox.hpp"

using txbox::inbox::Inbox;
using txbox::inbox::Outcome;

namespace {
struct Fixture {
  std::string url = txbox::test::create_database("inbox");
  pqxx::connection conn{url};
  Fixture() {
    pqxx::work tx(conn);
    tx.exec0("CREATE TABLE effects (message_id text, n int)");
    tx.commit();
  }
  int effects() {
    pqxx::nontransaction tx(conn);
    return tx.exec1("SELECT count(*) FROM effects")[0].as<int>();
  }
  int inbox_rows() {
    pqxx::nontransaction tx(conn);
    return tx.exec1("SELECT count(*) FROM txbox.inbox")[0].as<int>();
  }
};
auto write_effect(const std::string& id) {
  return [id](pqxx::transaction_base& tx) {
    tx.exec0("INSERT INTO effects VALUES (" + tx.quote(id) + ", 1)");
  };
}
}  // namespace

TEST_CASE("the same message delivered twice has its effect once", "[inbox]") {
  Fixture f;
  Inbox inbox("billing.orders");
  CHECK(inbox.process(f.conn, "m-1", write_effect("m-1")) == Outcome::processed);
  CHECK(inbox.process(f.conn, "m-1", write_effect("m-1")) == Outcome::duplicate);
  CHECK(f.effects() == 1);
  CHECK(f.inbox_rows() == 1);
  // Another consumer has its own record of the same id.
  Inbox other("shipping.orders");
  CHECK(other.process(f.conn, "m-1", write_effect("m-1")) == Outcome::processed);
  CHECK(f.effects() == 2);
}

TEST_CASE("a throwing handler leaves neither its effect nor the inbox row", "[inbox]") {
  Fixture f;
  Inbox inbox("billing.orders");
  CHECK_THROWS_WITH(inbox.process(f.conn, "m-2",
                                  [](pqxx::transaction_base& tx) {
                                    tx.exec0("INSERT INTO effects VALUES ('m-2', 1)");
                                    throw std::runtime_error("payment service down");
                                  }),
                    "payment service down");
  CHECK(f.effects() == 0);
  CHECK(f.inbox_rows() == 0);
  // Redelivery: processed this time.
  CHECK(inbox.process(f.conn, "m-2", write_effect("m-2")) == Outcome::processed);
  CHECK(f.effects() == 1);
}

TEST_CASE("inside the caller's transaction the caller decides", "[inbox]") {
  Fixture f;
  Inbox inbox("billing.orders");
  {
    pqxx::work tx(f.conn);
    CHECK(inbox.process(tx, "m-3", write_effect("m-3")) == Outcome::processed);
    CHECK(inbox.seen(tx, "m-3"));
    // not committed
  }
  CHECK(f.inbox_rows() == 0);
  pqxx::work tx(f.conn);
  CHECK(inbox.process(tx, "m-3", write_effect("m-3")) == Outcome::processed);
  tx.commit();
  CHECK(f.effects() == 1);
}

TEST_CASE("two deliveries racing on the same id run the handler once", "[inbox]") {
  Fixture f;
  Inbox inbox("billing.orders");
  pqxx::connection other(f.url);
  pqxx::work first(f.conn);
  REQUIRE(inbox.process(first, "m-4", write_effect("m-4")) == Outcome::processed);
  Outcome second_outcome = Outcome::processed;
  std::thread second([&] { second_outcome = inbox.process(other, "m-4", write_effect("m-4")); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // second now waits on the row lock
  first.commit();
  second.join();
  CHECK(second_outcome == Outcome::duplicate);
  CHECK(f.effects() == 1);
}

TEST_CASE("inbox rejects an empty consumer name or message id", "[inbox]") {
  CHECK_THROWS_AS(Inbox(""), txbox::UsageError);
  Fixture f;
  CHECK_THROWS_AS(Inbox("c").process(f.conn, "", write_effect("")), txbox::UsageError);
}

TEST_CASE("inbox without migration 0004 says to run txbox migrate", "[inbox]") {
  Fixture f;
  {
    pqxx::work tx(f.conn);
    tx.exec0("DROP FUNCTION txbox.inbox_claim(text, text[])");
    tx.commit();
  }
  Inbox inbox("billing.orders");
  CHECK_THROWS_WITH(inbox.process(f.conn, "m-5", write_effect("m-5")),
                    Catch::Matchers::Contains("inbox_claim") && Catch::Matchers::Contains("txbox migrate"));
  pqxx::work tx(f.conn);
  const std::vector<std::string> ids{"m-6"};
  CHECK_THROWS_AS(inbox.claim(tx, ids), txbox::Error);
}
