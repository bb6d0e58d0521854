// Dead letters: list/find/replay/purge in the caller's transaction, duration
// parsing, and the `txbox dead-letters` commands end to end.
#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/core/error.hpp"
#include "txbox/outbox/dead_letters.hpp"
#include "txbox/outbox/outbox.hpp"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
namespace test = txbox::test;
namespace outbox = txbox::outbox;
using namespace std::chrono_literals;

namespace {

struct Dead {
  std::string destination = "orders";
  std::optional<std::string> key = std::string("k1");
  std::string payload = "hello";
  std::string headers = R"({"trace": "t-1"})";
  std::string error_class = "transient";
  std::string last_error = "broker timed out";
  int attempts = 10;
  int age_seconds = 0;  // dead_at = now() - this
};

// A keyless dead letter of binary bytes that failed for good after one attempt.
Dead binary_permanent_letter(std::string payload) {
  Dead d;
  d.destination = "payments";
  d.key.reset();
  d.payload = std::move(payload);
  d.error_class = "permanent";
  d.attempts = 1;
  return d;
}

// Inserts a dead letter the way the relay does; returns its id.
int64_t insert_dead(pqxx::transaction_base& tx, const Dead& d) {
  auto key = d.key ? tx.quote(*d.key) : std::string("NULL");
  return tx
      .exec1("INSERT INTO txbox.dead_letters (outbox_id, message_id, destination, message_key, "
             "payload, headers, created_at, attempts, error_class, last_error, dead_at) VALUES (" +
             std::to_string(1000 + d.attempts) + ", gen_random_uuid(), " + tx.quote(d.destination) +
             ", " + key + ", " +
             tx.quote_raw(reinterpret_cast<const unsigned char*>(d.payload.data()),
                          d.payload.size()) +
             ", " + tx.quote(d.headers) + "::jsonb, now() - interval '1 hour', " +
             std::to_string(d.attempts) + ", " + tx.quote(d.error_class) + ", " +
             tx.quote(d.last_error) + ", now() - " + std::to_string(d.age_seconds) +
             " * interval '1 second') RETURNING id")[0]
      .as<int64_t>();
}

int64_t insert_dead(const std::string& url, const Dead& d) {
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  auto id = insert_dead(tx, d);
  tx.commit();
  return id;
}

long long count(pqxx::transaction_base& tx, const std::string& table) {
  return tx.exec1("SELECT count(*) FROM " + table)[0].as<long long>();
}
long long count(const std::string& url, const std::string& table) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return count(tx, table);
}

std::string message_id_of(const std::string& url, int64_t id) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx.exec1("SELECT message_id::text FROM txbox.dead_letters WHERE id = " + std::to_string(id))[0]
      .as<std::string>();
}

int lines(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

test::RunResult txbox_cli(std::vector<std::string> args, std::vector<std::string> env = {}) {
  args.insert(args.begin(), test::binary_path("txbox"));
  return test::run(args, std::chrono::seconds(30), env);
}

}  // namespace

TEST_CASE("dead letters: list filters by destination, pages, limits", "[dead_letters]") {
  auto url = test::create_database("dlq");
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  CHECK(outbox::list_dead_letters(tx).empty());

  Dead a;
  auto id1 = insert_dead(tx, a);
  Dead b = binary_permanent_letter(std::string("\x00\xff\x01", 3));
  b.headers = "{}";
  b.last_error = "message too large";
  auto id2 = insert_dead(tx, b);
  auto id3 = insert_dead(tx, a);

  auto all = outbox::list_dead_letters(tx);
  REQUIRE(all.size() == 3);
  CHECK(all[0].id == id1);
  CHECK(all[1].id == id2);
  CHECK(all[2].id == id3);
  CHECK(all[0].destination == "orders");
  CHECK(all[0].key == std::optional<std::string>("k1"));
  CHECK(all[0].payload == "hello");
  CHECK(all[0].headers_json == R"({"trace": "t-1"})");
  CHECK(all[0].attempts == 10);
  CHECK(all[0].outbox_id == 1010);
  CHECK(all[0].error_class == "transient");
  CHECK(all[0].last_error == "broker timed out");
  CHECK(outbox::is_uuid(all[0].message_id));
  CHECK_THAT(all[0].dead_at, StartsWith("20") && Contains("T"));
  CHECK(all[0].dead_at.back() == 'Z');
  CHECK(all[0].created_at < all[0].dead_at);
  CHECK(all[1].key == std::nullopt);
  CHECK(all[1].payload == std::string("\x00\xff\x01", 3));
  CHECK(all[1].error_class == "permanent");

  outbox::DeadLetterFilter only_orders;
  only_orders.destination = "orders";
  auto orders = outbox::list_dead_letters(tx, only_orders);
  REQUIRE(orders.size() == 2);
  CHECK(orders[0].id == id1);
  CHECK(orders[1].id == id3);

  outbox::DeadLetterFilter page;
  page.limit = 2;
  auto first = outbox::list_dead_letters(tx, page);
  REQUIRE(first.size() == 2);
  page.after_id = first.back().id;
  auto rest = outbox::list_dead_letters(tx, page);
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].id == id3);

  outbox::DeadLetterFilter none;
  none.destination = "nowhere";
  CHECK(outbox::list_dead_letters(tx, none).empty());

  outbox::DeadLetterFilter zero;
  zero.limit = 0;
  CHECK_THROWS_AS(outbox::list_dead_letters(tx, zero), txbox::UsageError);
}

TEST_CASE("dead letters: find", "[dead_letters]") {
  auto url = test::create_database("dlq");
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  Dead d;
  d.last_error = "line one\nline two";
  auto id = insert_dead(tx, d);
  auto found = outbox::find_dead_letter(tx, id);
  REQUIRE(found);
  CHECK(found->id == id);
  CHECK(found->last_error == "line one\nline two");
  CHECK(found->payload == "hello");
  CHECK_FALSE(outbox::find_dead_letter(tx, id + 1000));
}

TEST_CASE("dead letters: replay moves rows back into the outbox, in the caller's transaction",
          "[dead_letters]") {
  auto url = test::create_database("dlq");
  pqxx::connection conn(url);
  Dead d;
  d.payload = std::string("bin\x00\xfe", 5);
  d.headers = R"({"a": "1", "b": "two"})";
  int64_t id = 0, other = 0;
  int64_t queued = 0;
  {
    pqxx::work tx(conn);
    id = insert_dead(tx, d);
    other = insert_dead(tx, Dead{});
    // A row of the same key already waiting in the outbox: the replay goes after it.
    queued = tx.exec1("INSERT INTO txbox.outbox (destination, message_key) VALUES ('orders', 'k1') "
                      "RETURNING id")[0]
                 .as<int64_t>();
    tx.commit();
  }
  auto message_id = message_id_of(url, id);

  SECTION("a rollback leaves both tables as they were") {
    {
      pqxx::work tx(conn);
      CHECK(outbox::replay_dead_letters(tx, {id}) == 1);
      CHECK(count(tx, "txbox.outbox") == 2);
      CHECK(count(tx, "txbox.dead_letters") == 1);
      // destroyed without commit: rolled back
    }
    CHECK(count(url, "txbox.outbox") == 1);
    CHECK(count(url, "txbox.dead_letters") == 2);
    CHECK(message_id_of(url, id) == message_id);
  }

  SECTION("committed: same message id, destination, key, payload, headers; attempts 0") {
    {
      pqxx::work tx(conn);
      CHECK(outbox::replay_dead_letters(tx, {id, id}) == 1);  // duplicates count once
      tx.commit();
    }
    pqxx::nontransaction tx(conn);
    auto rows = tx.exec(
        "SELECT id, message_id::text, destination, message_key, payload, headers::text, attempts, "
        "next_attempt_at IS NULL, last_error IS NULL FROM txbox.outbox WHERE message_id = " +
        tx.quote(message_id) + "::uuid");
    REQUIRE(rows.size() == 1);
    CHECK(rows[0][0].as<int64_t>() > queued);
    CHECK(rows[0][1].as<std::string>() == message_id);
    CHECK(rows[0][2].as<std::string>() == "orders");
    CHECK(rows[0][3].as<std::string>() == "k1");
    CHECK(pqxx::binarystring(rows[0][4]).str() == d.payload);
    CHECK(rows[0][5].as<std::string>() == R"({"a": "1", "b": "two"})");
    CHECK(rows[0][6].as<int>() == 0);
    CHECK(rows[0][7].as<bool>());
    CHECK(rows[0][8].as<bool>());
    CHECK(count(tx, "txbox.dead_letters") == 1);
    CHECK(tx.exec("SELECT 1 FROM txbox.dead_letters WHERE id = " + std::to_string(id)).empty());
    CHECK_FALSE(tx.exec("SELECT 1 FROM txbox.dead_letters WHERE id = " + std::to_string(other)).empty());
  }

  SECTION("an unknown id throws, naming it, and changes nothing") {
    pqxx::work tx(conn);
    try {
      outbox::replay_dead_letters(tx, {id, 987654});
      FAIL("no exception");
    } catch (const txbox::Error& e) {
      CHECK(e.kind() == txbox::ErrorKind::permanent);
      CHECK_THAT(e.what(), Contains("987654") && Contains("nothing was replayed"));
      CHECK_THAT(e.what(), !Contains(std::to_string(id) + ","));
    }
    // The transaction is still usable and untouched.
    CHECK(count(tx, "txbox.outbox") == 1);
    CHECK(count(tx, "txbox.dead_letters") == 2);
    tx.commit();
    CHECK(count(url, "txbox.dead_letters") == 2);
  }

  SECTION("an empty id list does nothing") {
    pqxx::work tx(conn);
    CHECK(outbox::replay_dead_letters(tx, {}) == 0);
    CHECK(count(tx, "txbox.dead_letters") == 2);
  }
}

TEST_CASE("dead letters: replay all, by destination, in id order", "[dead_letters]") {
  auto url = test::create_database("dlq");
  pqxx::connection conn(url);
  std::vector<int64_t> orders;
  {
    pqxx::work tx(conn);
    Dead p;
    p.destination = "payments";
    insert_dead(tx, p);
    for (int i = 0; i < 3; ++i) orders.push_back(insert_dead(tx, Dead{}));
    tx.commit();
  }
  std::vector<std::string> expected;
  for (auto id : orders) expected.push_back(message_id_of(url, id));
  {
    pqxx::work tx(conn);
    CHECK(outbox::replay_all_dead_letters(tx, std::string("orders")) == 3);
    tx.commit();
  }
  {
    pqxx::nontransaction tx(conn);
    std::vector<std::string> got;
    for (const auto& row : tx.exec("SELECT message_id::text FROM txbox.outbox ORDER BY id"))
      got.push_back(row[0].as<std::string>());
    CHECK(got == expected);
    CHECK(count(tx, "txbox.dead_letters") == 1);
  }
  {
    pqxx::work tx(conn);
    CHECK(outbox::replay_all_dead_letters(tx) == 1);
    CHECK(outbox::replay_all_dead_letters(tx) == 0);
    tx.commit();
  }
  CHECK(count(url, "txbox.outbox") == 4);
  CHECK(count(url, "txbox.dead_letters") == 0);
}

TEST_CASE("dead letters: purge by age", "[dead_letters]") {
  auto url = test::create_database("dlq");
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  Dead old_one;
  old_one.age_seconds = 40 * 86400;
  Dead mid;
  mid.age_seconds = 2 * 3600;
  auto old_id = insert_dead(tx, old_one);
  auto mid_id = insert_dead(tx, mid);
  auto new_id = insert_dead(tx, Dead{});
  CHECK(outbox::purge_dead_letters(tx, outbox::parse_duration("30d")) == 1);
  CHECK_FALSE(outbox::find_dead_letter(tx, old_id));
  CHECK(outbox::purge_dead_letters(tx, outbox::parse_duration("30d")) == 0);
  CHECK(outbox::purge_dead_letters(tx, 1h) == 1);
  CHECK_FALSE(outbox::find_dead_letter(tx, mid_id));
  CHECK(outbox::find_dead_letter(tx, new_id));
  CHECK_THROWS_AS(outbox::purge_dead_letters(tx, -1s), txbox::UsageError);
  CHECK(count(tx, "txbox.outbox") == 0);  // purge never replays
}

TEST_CASE("dead letters: parse_duration", "[dead_letters]") {
  CHECK(outbox::parse_duration("45s") == 45s);
  CHECK(outbox::parse_duration("15m") == 15min);
  CHECK(outbox::parse_duration("12h") == 12h);
  CHECK(outbox::parse_duration("30d") == 30 * 24h);
  CHECK(outbox::parse_duration("2w") == 14 * 24h);
  CHECK(outbox::parse_duration("0s") == 0s);
  CHECK(outbox::parse_duration("007m") == 7min);
  for (std::string bad : {"", "s", "30", "d30", "30x", "30 d", " 30d", "30d ", "-5d", "+5d", "1.5h",
                          "30D", "3dd", "30days", "99999999999999999999s", "9999999999w"}) {
    INFO("'" << bad << "'");
    try {
      outbox::parse_duration(bad);
      FAIL("accepted");
    } catch (const txbox::UsageError& e) {
      CHECK_THAT(e.what(), Contains("45s") && Contains("30d") && Contains("2w"));
    }
  }
}

TEST_CASE("txbox dead-letters: list, show, replay, purge", "[dead_letters][cli]") {
  auto url = test::create_database("dlq");
  auto r = txbox_cli({"dead-letters", "list", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output == "no dead letters\n");

  Dead text;
  text.last_error = "first line\nsecond line " + std::string(200, 'x');
  auto text_id = insert_dead(url, text);
  Dead binary = binary_permanent_letter(std::string("\x00\xff\x10", 3));
  auto binary_id = insert_dead(url, binary);
  auto text_message = message_id_of(url, text_id);
  auto binary_message = message_id_of(url, binary_id);

  r = txbox_cli({"dead-letters", "list", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(lines(r.output) == 3);
  CHECK_THAT(r.output, Contains("ID") && Contains("DEAD AT") && Contains("DESTINATION") &&
                           Contains("KEY") && Contains("ATTEMPTS") && Contains("ERROR CLASS") &&
                           Contains("LAST ERROR") && Contains("MESSAGE ID"));
  CHECK_THAT(r.output, Contains(text_message) && Contains(binary_message));
  CHECK_THAT(r.output, Contains("first line second line xxx") && Contains("..."));
  CHECK_THAT(r.output, !Contains(std::string(100, 'x')));
  CHECK_THAT(r.output, Contains("transient") && Contains("permanent") && Contains("payments"));

  // TXBOX_DATABASE_URL works too; filters.
  r = txbox_cli({"dead-letters", "list", "--destination", "payments"}, {"TXBOX_DATABASE_URL=" + url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains(binary_message) && !Contains(text_message));
  r = txbox_cli({"dead-letters", "list", "--limit", "1", "--database-url", url});
  INFO(r.output);
  CHECK_THAT(r.output, Contains(text_message) && !Contains(binary_message) &&
                           Contains("--after-id " + std::to_string(text_id)));

  r = txbox_cli({"dead-letters", "show", std::to_string(text_id), "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("message id:  " + text_message) && Contains("destination: orders") &&
                           Contains("key:         k1") && Contains("attempts:    10") &&
                           Contains("error class: transient") &&
                           Contains(R"(headers:     {"trace": "t-1"})") &&
                           Contains("payload (text, 5 bytes):\nhello\n") &&
                           Contains(std::string(200, 'x')) && Contains("outbox id:") &&
                           Contains("created at:") && Contains("dead at:"));
  r = txbox_cli({"dead-letters", "show", std::to_string(binary_id), "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("key:         (none)") && Contains("payload (hex, 3 bytes") &&
                           Contains("\\x00ff10"));

  r = txbox_cli({"status", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("dead letters: 2") && Contains("outbox rows: 0"));

  r = txbox_cli({"dead-letters", "replay", std::to_string(text_id), "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output == "replayed 1 dead letter into the outbox\n");
  CHECK(count(url, "txbox.outbox") == 1);
  CHECK(count(url, "txbox.dead_letters") == 1);

  insert_dead(url, Dead{});
  r = txbox_cli({"dead-letters", "replay", "--all", "--destination", "payments", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output == "replayed 1 dead letter into the outbox\n");
  insert_dead(url, Dead{});
  r = txbox_cli({"dead-letters", "replay", "--all", "--database-url", url});
  INFO(r.output);
  CHECK(r.output == "replayed 2 dead letters into the outbox\n");
  CHECK(count(url, "txbox.outbox") == 4);
  CHECK(count(url, "txbox.dead_letters") == 0);

  Dead old_one;
  old_one.age_seconds = 3 * 86400;
  insert_dead(url, old_one);
  insert_dead(url, Dead{});
  r = txbox_cli({"dead-letters", "purge", "--older-than", "2d", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output == "purged 1 dead letter older than 2d\n");
  CHECK(count(url, "txbox.dead_letters") == 1);
}

TEST_CASE("txbox dead-letters: errors are one line with the right exit code", "[dead_letters][cli]") {
  auto url = test::create_database("dlq");
  auto id = insert_dead(url, Dead{});

  auto r = txbox_cli({"dead-letters", "show", "424242", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("txbox: error: no dead letter with id 424242"));

  r = txbox_cli({"dead-letters", "show", "abc", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK(lines(r.output) == 1);

  r = txbox_cli({"dead-letters", "replay", std::to_string(id), "424242", "--database-url", url});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("no dead letter with id 424242") && Contains("nothing was replayed"));
  CHECK(count(url, "txbox.dead_letters") == 1);
  CHECK(count(url, "txbox.outbox") == 0);

  for (std::vector<std::string> args :
       {std::vector<std::string>{"dead-letters", "replay"},
        std::vector<std::string>{"dead-letters", "replay", "--all", std::to_string(id)},
        std::vector<std::string>{"dead-letters", "replay", std::to_string(id), "--destination", "x"}}) {
    args.push_back("--database-url");
    args.push_back(url);
    r = txbox_cli(args);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK_THAT(r.output, Contains("txbox: error:") && Contains("--all"));
  }
  CHECK(count(url, "txbox.dead_letters") == 1);

  for (std::string bad : {"30", "3x", "-1d", "soon"}) {
    r = txbox_cli({"dead-letters", "purge", "--older-than", bad, "--database-url", url});
    INFO(bad << ": " << r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK_THAT(r.output, Contains("malformed duration") && Contains("30d") && Contains("12h"));
  }
  r = txbox_cli({"dead-letters", "purge", "--database-url", url});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--older-than"));
  CHECK(count(url, "txbox.dead_letters") == 1);

  r = txbox_cli({"dead-letters", "list", "--limit", "0", "--database-url", url});
  CHECK(r.exit_code == 2);
  r = txbox_cli({"dead-letters", "--database-url", url});
  CHECK(r.exit_code == 2);
  r = txbox_cli({"dead-letters", "list"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Contains("--database-url"));

  auto bare = test::create_database("dlq", false);
  r = txbox_cli({"dead-letters", "list", "--database-url", bare});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("no txbox schema") && Contains("txbox migrate"));

  r = txbox_cli({"dead-letters", "list", "--database-url", "postgresql://postgres:secret@127.0.0.1:1/x"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(lines(r.output) == 1);
  CHECK_THAT(r.output, Contains("cannot connect to PostgreSQL") && !Contains("secret"));
}
