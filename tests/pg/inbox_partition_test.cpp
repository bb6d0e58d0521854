// The time-partitioned inbox (`txbox inbox partition`, docs/inbox.md):
// duplicates found across partitions, racing claimers on both sides of a
// partition boundary, expired partitions dropped while consumers claim.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <thread>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/core/error.hpp"
#include "txbox/inbox/inbox.hpp"

using Catch::Matchers::Contains;
using txbox::inbox::Inbox;
namespace test = txbox::test;

namespace {

test::RunResult partition(const std::string& url, std::vector<std::string> flags) {
  std::vector<std::string> argv{test::binary_path("txbox"), "inbox", "partition", "--database-url", url};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return test::run(argv, std::chrono::seconds(60));
}

std::string query_text(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  auto row = tx.exec1(sql);
  return row[0].is_null() ? "" : row[0].as<std::string>();
}

char inbox_kind(const std::string& url, const std::string& table = "txbox.inbox") {
  return query_text(url, "SELECT relkind::text FROM pg_class WHERE oid = '" + table + "'::regclass").at(0);
}

// Claims `ids` in a transaction of its own and commits; the ids found new.
std::vector<std::string> claim_new(pqxx::connection& conn, const Inbox& inbox, const std::vector<std::string>& ids) {
  pqxx::work tx(conn);
  auto fresh = inbox.claim(tx, ids);
  tx.commit();
  std::vector<std::string> out;
  for (size_t i = 0; i < ids.size(); ++i)
    if (fresh[i]) out.push_back(ids[i]);
  return out;
}

std::string partition_of(pqxx::connection& conn, const std::string& id) {
  pqxx::nontransaction tx(conn);
  return tx.exec_params1("SELECT tableoid::regclass::text FROM txbox.inbox WHERE message_id = $1", id)[0]
      .as<std::string>();
}

using Ids = std::vector<std::string>;

// A new database whose inbox is partitioned by the second (a minute's
// retention, a minute ahead); the old table is the partition of the next
// one to two seconds.
std::string partitioned_by_seconds() {
  auto url = test::create_database("inbox_part");
  auto r = partition(url, {"--interval", "1 second", "--ahead", "60", "--retention", "1 minute"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return url;
}

// Two connections to partitioned_by_seconds(), once the old table's range
// is over: from then on every second's claims land in a partition of their own.
struct RacingClaimers {
  std::string url = partitioned_by_seconds();
  pqxx::connection first_conn{url}, second_conn{url};
  Inbox inbox{"c"};
  RacingClaimers() { std::this_thread::sleep_for(std::chrono::milliseconds(2100)); }
};

}  // namespace

TEST_CASE("txbox inbox partition converts the inbox, keeps its rows and is idempotent", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  const std::string reader = test::unique_name("reader");
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO txbox.inbox (consumer, message_id, processed_at) VALUES "
             "('c', 'ten-days-ago', now() - interval '10 days'), ('c', 'today', now())");
    tx.exec0("CREATE ROLE " + reader);
    tx.exec0("GRANT SELECT ON txbox.inbox TO " + reader);
    tx.commit();
  }
  auto status = [&] { return test::run({test::binary_path("txbox"), "status", "--database-url", url}).output; };
  CHECK_THAT(status(), Contains("inbox: plain table"));
  auto first = partition(url, {"--interval", "1 day", "--retention", "7 days"});
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  CHECK_THAT(first.output, Contains("converted") && Contains("created partition") &&
                               Contains("dedup window (retention) 7 days"));
  CHECK(inbox_kind(url) == 'p');
  CHECK(query_text(url, "SELECT count(*) FROM txbox.inbox") == "2");
  CHECK_THAT(status(), Contains("inbox: partitioned by 1 day, retention 7 days, 3 partitions up to"));
  CHECK(query_text(url, "SELECT has_table_privilege('" + reader + "', 'txbox.inbox', 'SELECT')") == "t");

  auto second = partition(url, {});
  INFO(second.output);
  CHECK(second.exit_code == 0);
  CHECK_THAT(second.output, !Contains("converted") && !Contains("created") && !Contains("dropped") &&
                                Contains("inbox partitions of 1 day"));

  // The rows from before the conversion are still found.
  pqxx::connection conn(url);
  Inbox inbox("c");
  CHECK(claim_new(conn, inbox, {"ten-days-ago", "today", "tomorrow"}) == Ids{"tomorrow"});
  pqxx::nontransaction drop(conn);
  drop.exec0("DROP OWNED BY " + reader);
  drop.exec0("DROP ROLE " + reader);
}

TEST_CASE("partitioned inbox: a duplicate is found in another partition", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  REQUIRE(partition(url, {"--interval", "1 day"}).exit_code == 0);
  pqxx::connection conn(url);
  {
    // Recorded in an earlier partition (the old table) and in a later one.
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO txbox.inbox (consumer, message_id, processed_at) VALUES "
             "('c', 'earlier', now() - interval '2 days'), ('c', 'later', now() + interval '3 days')");
    tx.commit();
  }
  CHECK(partition_of(conn, "earlier") != partition_of(conn, "later"));
  Inbox inbox("c");
  CHECK(claim_new(conn, inbox, {"earlier", "later", "new", "new"}) == Ids{"new"});
  CHECK(claim_new(conn, inbox, {"new"}).empty());
  CHECK(query_text(url, "SELECT count(*) FROM txbox.inbox") == "3");
  // Another consumer has its own record of the same ids.
  CHECK(claim_new(conn, Inbox("other"), {"earlier", "later"}) == Ids{"earlier", "later"});
}

TEST_CASE("partitioned inbox: an id claimed before a boundary is a duplicate after it", "[inbox-partition]") {
  auto url = partitioned_by_seconds();
  pqxx::connection conn(url);
  Inbox inbox("c");
  CHECK(claim_new(conn, inbox, {"x"}) == Ids{"x"});
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past the old table's end (<= 2 s)
  CHECK(claim_new(conn, inbox, {"x", "y"}) == Ids{"y"});
  CHECK(partition_of(conn, "x") != partition_of(conn, "y"));
}

TEST_CASE("partitioned inbox: two transactions racing on an id across a boundary, one wins", "[inbox-partition]") {
  RacingClaimers f;
  auto& [url, first_conn, second_conn, inbox] = f;
  for (bool first_commits : {true, false}) {
    const std::string id = first_commits ? "race-commit" : "race-rollback";
    INFO(id);
    auto first = std::make_unique<pqxx::work>(first_conn);
    REQUIRE(inbox.claim(*first, Ids{id}) == std::vector<bool>{true});
    // The second transaction starts in a later partition than the first.
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    std::atomic<bool> done{false};
    std::vector<bool> second_fresh;
    std::thread second([&] {
      pqxx::work tx(second_conn);
      second_fresh = inbox.claim(tx, Ids{"other-" + id, id});
      tx.commit();
      done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK_FALSE(done);  // waits for the first transaction
    if (first_commits) first->commit();
    else first->abort();
    second.join();
    CHECK(second_fresh == std::vector<bool>{true, !first_commits});
    CHECK(query_text(url, "SELECT count(*) FROM txbox.inbox WHERE message_id = '" + id + "'") == "1");
  }
}

TEST_CASE("partitioned inbox: SERIALIZABLE claimers racing across a boundary never both win", "[inbox-partition]") {
  RacingClaimers f;
  auto& [url, first_conn, second_conn, inbox] = f;
  pqxx::transaction<pqxx::isolation_level::serializable> first(first_conn);
  REQUIRE(inbox.claim(first, Ids{"s"}) == std::vector<bool>{true});
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // the second one starts a partition later
  std::optional<bool> second_fresh;
  std::string second_error;
  std::thread second([&] {
    try {
      pqxx::transaction<pqxx::isolation_level::serializable> tx(second_conn);
      tx.exec("SELECT 1");  // its snapshot: taken before the first one commits
      second_fresh = inbox.claim(tx, Ids{"s"})[0];
      tx.commit();
    } catch (const pqxx::serialization_failure& e) {
      second_error = e.what();
    } catch (const std::exception& e) {
      second_error = std::string("not a serialization failure: ") + e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  first.commit();
  second.join();
  INFO(second_error);
  // Either it saw the first claim or SSI made it roll back (retried by the caller).
  CHECK_THAT(second_error, !Contains("not a serialization failure"));
  CHECK((second_fresh == std::optional<bool>(false) || !second_error.empty()));
  CHECK(query_text(url, "SELECT count(*) FROM txbox.inbox WHERE message_id = 's'") == "1");
}

TEST_CASE("partitioned inbox: claims past the last partition say to run txbox inbox partition", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  REQUIRE(partition(url, {"--interval", "1 second", "--ahead", "1"}).exit_code == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // past the partitions (<= 3 s)
  pqxx::connection conn(url);
  CHECK_THROWS_WITH(claim_new(conn, Inbox("c"), {"late"}),
                    Contains("cannot take new rows") && Contains("txbox inbox partition --database-url"));
  REQUIRE(partition(url, {}).exit_code == 0);
  CHECK(claim_new(conn, Inbox("c"), {"late"}) == Ids{"late"});
}

TEST_CASE("partitioned inbox: release and seen work, REPEATABLE READ is refused", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  REQUIRE(partition(url, {}).exit_code == 0);
  pqxx::connection conn(url);
  Inbox inbox("c");
  {
    pqxx::work tx(conn);
    CHECK(inbox.claim(tx, Ids{"a", "b"}) == std::vector<bool>{true, true});
    inbox.release(tx, Ids{"b"});
    CHECK(inbox.seen(tx, "a"));
    CHECK_FALSE(inbox.seen(tx, "b"));
    tx.commit();
  }
  CHECK(claim_new(conn, inbox, {"a", "b"}) == Ids{"b"});
  CHECK(inbox.process(conn, "a", [](pqxx::transaction_base&) { FAIL("duplicate handled"); }) ==
        txbox::inbox::Outcome::duplicate);
  pqxx::transaction<pqxx::isolation_level::repeatable_read> tx(conn);
  CHECK_THROWS_WITH(inbox.claim(tx, Ids{"c"}), Contains("REPEATABLE READ") && Contains("READ COMMITTED"));
}

TEST_CASE("partitioned inbox: expired partitions dropped while consumers claim", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  const std::vector<std::string> flags{"--interval", "1 second", "--ahead", "60", "--retention", "5 seconds"};
  REQUIRE(partition(url, flags).exit_code == 0);
  Inbox inbox("c");
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto duration = std::chrono::seconds(12);
  std::mutex mutex;
  std::map<std::string, int> fresh_count;  // id -> times claimed as new, all threads
  std::vector<std::string> errors;
  std::atomic<long> claims{0};
  auto consumer = [&] {
    try {
      pqxx::connection conn(url);
      while (Clock::now() - start < duration) {
        // Every thread claims the ids of the current 100 ms tick, and again
        // those of 500 ms ago: always well inside the 5-second window.
        const long tick = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count() / 100;
        Ids ids;
        for (long t : {tick, tick - 5})
          for (int j = 0; j < 10 && t >= 0; ++j) ids.push_back("t" + std::to_string(t) + "-" + std::to_string(j));
        auto fresh = claim_new(conn, inbox, ids);
        ++claims;
        std::lock_guard<std::mutex> lock(mutex);
        for (const auto& id : fresh) ++fresh_count[id];
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex);
      errors.push_back(e.what());
    }
  };
  std::vector<std::thread> consumers;
  for (int i = 0; i < 4; ++i) consumers.emplace_back(consumer);
  int dropped = 0;
  while (Clock::now() - start < duration) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto r = partition(url, flags);
    INFO(r.output);
    CHECK(r.exit_code == 0);
    for (size_t at = 0; (at = r.output.find("dropped expired partition", at)) != std::string::npos; ++at) ++dropped;
  }
  for (auto& t : consumers) t.join();
  INFO("claims: " << claims.load());
  CHECK(errors.empty());
  for (const auto& e : errors) WARN(e);
  CHECK(dropped >= 3);
  CHECK(claims > 20);
  size_t twice = 0;
  for (const auto& [id, n] : fresh_count) twice += n != 1;
  CHECK(twice == 0);
  CHECK(fresh_count.size() >= 100);
}

TEST_CASE("txbox inbox partition: bad input is refused with exit 2 and changes nothing", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  for (const auto& c : std::vector<Case>{
           {{"--interval", "banana"}, "--interval 'banana' is not a PostgreSQL interval"},
           {{"--retention", "7 apples"}, "--retention '7 apples' is not a PostgreSQL interval"},
           {{"--interval", "1 month"}, "has months or years"},
           {{"--interval", "0 seconds"}, "shorter than a second"},
           {{"--interval", "1 day", "--retention", "12 hours"}, "--retention '12:00:00' is shorter than --interval '1 day'"},
           {{"--ahead", "0"}, "--ahead"},
           {{"--schema", "nosuch"}, "schema 'nosuch' has no inbox table"},
           {{"--schema", "Bad-Name"}, "--schema"},
       }) {
    auto r = partition(url, c.flags);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains(c.says));
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  }
  CHECK(inbox_kind(url) == 'r');
  // Once partitioned, the interval is fixed.
  REQUIRE(partition(url, {"--interval", "1 day"}).exit_code == 0);
  auto r = partition(url, {"--interval", "1 hour"});
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("partitioned by '1 day'") && Contains("cannot change"));
  // The retention may change.
  auto longer = partition(url, {"--retention", "30 days"});
  CHECK(longer.exit_code == 0);
  CHECK_THAT(longer.output, Contains("dedup window (retention) 30 days"));
}

TEST_CASE("txbox inbox partition: a transaction holding the inbox makes the conversion give up", "[inbox-partition]") {
  auto url = test::create_database("inbox_part");
  pqxx::connection conn(url);
  pqxx::work open(conn);
  Inbox("c").claim(open, Ids{"in-flight"});
  auto r = partition(url, {});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("could not lock") && Contains("not converted") && Contains("run the command again"));
  open.commit();
  CHECK(inbox_kind(url) == 'r');
  CHECK(query_text(url, "SELECT count(*) FROM pg_constraint WHERE conname = 'inbox_before_partitioning'") == "0");
  REQUIRE(partition(url, {}).exit_code == 0);
  CHECK(claim_new(conn, Inbox("c"), {"in-flight", "next"}) == Ids{"next"});
}

TEST_CASE("txbox inbox partition works in another schema", "[inbox-partition]") {
  auto url = test::create_database("inbox_part", false);
  REQUIRE(test::run({test::binary_path("txbox"), "migrate", "--database-url", url, "--schema", "orders"}).exit_code == 0);
  auto r = partition(url, {"--schema", "orders"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(inbox_kind(url, "orders.inbox") == 'p');
  pqxx::connection conn(url);
  Inbox inbox("c", {.schema = txbox::SchemaName("orders")});
  pqxx::work tx(conn);
  CHECK(inbox.claim(tx, Ids{"a", "a", "b"}) == std::vector<bool>{true, false, true});
  CHECK(inbox.claim(tx, Ids{"b"}) == std::vector<bool>{false});
}
