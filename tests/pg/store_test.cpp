// OutboxStore against a real PostgreSQL: what a claim returns (lanes, order,
// exclusions, blocked keys, byte and row limits, the next due time), what a
// completion does to exactly the claimed row versions, lane locks and the
// fleet view, and the wake-up trigger.
#include <catch2/catch.hpp>
#include <pqxx/pqxx>
#include <thread>

#include "support/test_env.hpp"
#include "txbox/outbox/store.hpp"

using namespace txbox::outbox;
using namespace std::chrono_literals;

namespace {

long long scalar(pqxx::connection& conn, const std::string& sql) {
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<long long>();
}

// Inserts a row and returns its id and lane.
std::pair<int64_t, Lane> insert(pqxx::connection& conn, const std::string& key, const std::string& payload = "p",
                                const std::string& destination = "orders") {
  pqxx::nontransaction tx(conn);
  auto row = tx.exec_params1(
      "INSERT INTO txbox.outbox (destination, message_key, payload) VALUES ($1, $2, convert_to($3, 'UTF8')) "
      "RETURNING id, lane",
      destination, key, payload);
  return {row[0].as<int64_t>(), static_cast<Lane>(row[1].as<int>())};
}

Lane lane_of(pqxx::connection& conn, const std::string& key) {
  pqxx::nontransaction tx(conn);
  return static_cast<Lane>(
      tx.exec_params1("SELECT (hashtextextended($1, 0) & 255)::int", key)[0].as<int>());
}

std::vector<Lane> all_lanes() {
  std::vector<Lane> lanes;
  for (int i = 0; i < kLaneCount; ++i) lanes.push_back(static_cast<Lane>(i));
  return lanes;
}

std::vector<int64_t> ids(const Claim& claim) {
  std::vector<int64_t> out;
  for (const auto& row : claim.rows) out.push_back(row.row.id);
  return out;
}

}  // namespace

TEST_CASE("store: a claim returns the due rows of the given lanes, id order within a lane", "[store]") {
  pqxx::connection conn(txbox::test::create_database("store"));
  OutboxStore store(conn);
  auto [a1, lane_a] = insert(conn, "a", "one");
  auto [b1, lane_b] = insert(conn, "b");
  auto [a2, lane_a2] = insert(conn, "a", "two");
  REQUIRE(lane_a == lane_a2);
  REQUIRE(lane_a != lane_b);

  std::vector<Lane> only_a{lane_a};
  auto claim = store.claim({.lanes = only_a});
  CHECK(ids(claim) == std::vector<int64_t>{a1, a2});
  CHECK(claim.rows[0].payload == "one");
  CHECK(claim.rows[0].payload_bytes == 3);
  CHECK(claim.rows[0].key == "a");
  CHECK(claim.rows[0].destination == "orders");
  CHECK(claim.rows[0].headers_json == "{}");
  CHECK(claim.rows[0].attempts == 0);
  CHECK_FALSE(claim.rows[0].first_failed_at);
  CHECK(claim.backend_pid == conn.backendpid());
  CHECK_FALSE(claim.full);

  // Lanes in the order given.
  std::vector<Lane> b_then_a{lane_b, lane_a};
  CHECK(ids(store.claim({.lanes = b_then_a})) == std::vector<int64_t>{b1, a1, a2});
  // A claim reads: nothing changed.
  CHECK(scalar(conn, "SELECT count(*) FROM txbox.outbox") == 3);
}

TEST_CASE("store: rows and keys in flight are left out of the next claim", "[store]") {
  pqxx::connection conn(txbox::test::create_database("store"));
  OutboxStore store(conn);
  auto [a1, lane_a] = insert(conn, "a");
  auto [a2, lane] = insert(conn, "a");
  auto [n1, lane_n] = insert(conn, "");  // an empty key is a key like any other
  auto lanes = all_lanes();
  std::vector<int64_t> in_flight_ids{a1};
  std::vector<std::string> in_flight_keys{"a"};
  auto claim = store.claim({.lanes = lanes, .exclude_ids = in_flight_ids, .exclude_keys = in_flight_keys});
  CHECK(ids(claim) == std::vector<int64_t>{n1});
  (void)lane_a;
  (void)lane;
  (void)lane_n;
}

TEST_CASE("store: a key whose earlier row waits for its retry is not due, its other rows wait too", "[store]") {
  pqxx::connection conn(txbox::test::create_database("store"));
  OutboxStore store(conn);
  auto [a1, lane_a] = insert(conn, "a");
  auto [a2, lane_a2] = insert(conn, "a");
  auto [c1, lane_c] = insert(conn, "c");
  {
    pqxx::nontransaction tx(conn);
    tx.exec0("UPDATE txbox.outbox SET attempts = 1, next_attempt_at = now() + interval '1 hour' WHERE id = " +
             std::to_string(a1));
  }
  std::vector<Lane> lanes{lane_a};
  auto claim = store.claim({.lanes = lanes});
  if (lane_c != lane_a) {
    CHECK(claim.rows.empty());
    // Nothing due: the claim says when the earliest waiting row is.
    REQUIRE(claim.next_due_in);
    CHECK(*claim.next_due_in > 59min);
    CHECK(*claim.next_due_in <= 60min);
  }
  {
    pqxx::nontransaction tx(conn);
    tx.exec0("UPDATE txbox.outbox SET next_attempt_at = now() - interval '1 second' WHERE id = " +
             std::to_string(a1));
  }
  auto due = store.claim({.lanes = lanes});
  std::vector<int64_t> expected{a1, a2};
  if (lane_c == lane_a) expected.push_back(c1);
  CHECK(ids(due) == expected);
  CHECK_FALSE(due.next_due_in);
  (void)lane_a2;
}

TEST_CASE("store: a claim stops at max_rows and at max_bytes, a larger first row comes alone, unread",
          "[store]") {
  pqxx::connection conn(txbox::test::create_database("store"));
  OutboxStore store(conn);
  std::vector<int64_t> rows;
  Lane lane = 0;
  for (int i = 0; i < 5; ++i) {
    auto [id, l] = insert(conn, "k", std::string(100, 'x'));
    rows.push_back(id);
    lane = l;
  }
  std::vector<Lane> lanes{lane};
  auto by_rows = store.claim({.lanes = lanes, .max_rows = 2});
  CHECK(ids(by_rows) == std::vector<int64_t>{rows[0], rows[1]});
  CHECK(by_rows.full);
  auto by_bytes = store.claim({.lanes = lanes, .max_rows = 500, .max_bytes = 250});
  CHECK(ids(by_bytes) == std::vector<int64_t>{rows[0], rows[1]});
  CHECK(by_bytes.full);
  auto everything = store.claim({.lanes = lanes, .max_rows = 500, .max_bytes = 500});
  CHECK(everything.rows.size() == 5);
  CHECK_FALSE(everything.full);

  auto oversized = store.claim({.lanes = lanes, .max_rows = 500, .max_bytes = 50});
  REQUIRE(oversized.rows.size() == 1);
  CHECK(oversized.rows[0].row.id == rows[0]);
  CHECK_FALSE(oversized.rows[0].payload);
  CHECK(oversized.rows[0].payload_bytes == 100);
  CHECK(store.fetch_payload(oversized.rows[0].row, 100) == std::string(100, 'x'));
}

TEST_CASE("store: fetch_payload reads a large payload in chunks, and nothing once the row changed", "[store]") {
  pqxx::connection conn(txbox::test::create_database("store"));
  OutboxStore store(conn);
  std::string big(9 * 1024 * 1024 + 7, 'y');
  big[0] = 'a';
  big[big.size() - 1] = 'z';
  auto [id, lane] = insert(conn, "k", big);
  std::vector<Lane> lanes{lane};
  auto claim = store.claim({.lanes = lanes, .max_bytes = 1024});
  REQUIRE(claim.rows.size() == 1);
  REQUIRE_FALSE(claim.rows[0].payload);
  CHECK(store.fetch_payload(claim.rows[0].row, claim.rows[0].payload_bytes) == big);
  {
    pqxx::nontransaction tx(conn);
    tx.exec0("UPDATE txbox.outbox SET headers = '{\"x\":\"y\"}' WHERE id = " + std::to_string(id));
  }
  CHECK_FALSE(store.fetch_payload(claim.rows[0].row, claim.rows[0].payload_bytes));
}

TEST_CASE("store: completion deletes, reschedules and dead-letters exactly the claimed versions", "[store]") {
  pqxx::connection conn(txbox::test::create_database("store"));
  OutboxStore store(conn);
  auto [a, lane_a] = insert(conn, "a");
  auto [b, lane_b] = insert(conn, "b");
  auto [c, lane_c] = insert(conn, "c");
  auto [d, lane_d] = insert(conn, "d");
  auto lanes = all_lanes();
  auto claim = store.claim({.lanes = lanes});
  REQUIRE(claim.rows.size() == 4);
  auto version = [&](int64_t id) {
    for (const auto& r : claim.rows)
      if (r.row.id == id) return r.row;
    FAIL("not claimed");
    return RowVersion{};
  };
  // Someone else changes d after the claim (an operator fixing it): its new
  // version is not what was published, so the completion leaves it alone.
  {
    pqxx::nontransaction tx(conn);
    tx.exec0("UPDATE txbox.outbox SET destination = 'fixed' WHERE id = " + std::to_string(d));
  }
  Completion completion;
  completion.published = {version(a), version(d)};
  completion.retries = {{version(b), 1500ms, "transient error: leader not available, \"quoted\", {braces}"}};
  completion.dead_letters = {{version(c), "permanent", "too large"}};
  auto counts = store.complete(completion);
  CHECK(counts.deleted == 1);
  CHECK(counts.retried == 1);
  CHECK(counts.dead_lettered == 1);
  CHECK(scalar(conn, "SELECT count(*) FROM txbox.outbox WHERE id = " + std::to_string(a)) == 0);
  CHECK(scalar(conn, "SELECT count(*) FROM txbox.outbox WHERE id = " + std::to_string(d) +
                         " AND destination = 'fixed'") == 1);
  pqxx::nontransaction tx(conn);
  auto retried = tx.exec1(
      "SELECT attempts, extract(epoch FROM next_attempt_at - now()), last_error, first_failed_at IS NOT NULL "
      "FROM txbox.outbox WHERE id = " +
      std::to_string(b));
  CHECK(retried[0].as<int>() == 1);
  CHECK(retried[1].as<double>() > 1.0);
  CHECK(retried[1].as<double>() <= 1.5);
  CHECK(retried[2].as<std::string>() == "transient error: leader not available, \"quoted\", {braces}");
  CHECK(retried[3].as<bool>());
  auto dead = tx.exec1("SELECT outbox_id, error_class, last_error, attempts FROM txbox.dead_letters");
  CHECK(dead[0].as<int64_t>() == c);
  CHECK(dead[1].as<std::string>() == "permanent");
  CHECK(dead[2].as<std::string>() == "too large");
  CHECK(dead[3].as<int>() == 1);
  (void)lane_a;
  (void)lane_b;
  (void)lane_c;
  (void)lane_d;
}

TEST_CASE("store: a row another session has locked is still claimed, never skipped", "[store]") {
  // FOR UPDATE SKIP LOCKED inside an owned lane let a key's later rows
  // overtake a row an operator held; a snapshot read sees it.
  auto url = txbox::test::create_database("store");
  pqxx::connection conn(url);
  OutboxStore store(conn);
  auto [a1, lane] = insert(conn, "a");
  auto [a2, lane2] = insert(conn, "a");
  pqxx::connection op(url);
  pqxx::work hold(op);
  hold.exec1("SELECT 1 FROM txbox.outbox WHERE id = " + std::to_string(a1) + " FOR UPDATE");
  std::vector<Lane> lanes{lane};
  CHECK(ids(store.claim({.lanes = lanes})) == std::vector<int64_t>{a1, a2});
  hold.abort();
  (void)lane2;
}

TEST_CASE("store: lane locks, the fleet view and due lanes", "[store]") {
  auto url = txbox::test::create_database("store");
  pqxx::connection w1(url), w2(url), coordinator(url);
  OutboxStore s1(w1), s2(w2), view(coordinator);
  CHECK(view.fleet({}).workers == 0);
  CHECK(s1.join_fleet() == w1.backendpid());
  s2.join_fleet();
  std::vector<Lane> want{1, 2, 3};
  CHECK(s1.change_lanes(want, {}) == want);
  std::vector<Lane> overlap{3, 4};
  CHECK(s2.change_lanes(overlap, {}) == std::vector<Lane>{4});  // 3 is taken
  auto fleet = view.fleet({});
  CHECK(fleet.workers == 2);
  std::sort(fleet.taken.begin(), fleet.taken.end());
  CHECK(fleet.taken == std::vector<Lane>{1, 2, 3, 4});
  std::vector<Lane> give_back{2};
  CHECK(s1.change_lanes({}, give_back).empty());
  fleet = view.fleet({});
  std::sort(fleet.taken.begin(), fleet.taken.end());
  CHECK(fleet.taken == std::vector<Lane>{1, 3, 4});

  auto lane_a = lane_of(w1, "a");
  insert(w1, "a");
  std::vector<Lane> check{lane_a, static_cast<Lane>((lane_a + 1) % kLaneCount)};
  CHECK(view.fleet(check).due == std::vector<Lane>{lane_a});
  // A session that ends gives everything back.
  w2.disconnect();
  std::this_thread::sleep_for(200ms);
  fleet = view.fleet({});
  CHECK(fleet.workers == 1);
  CHECK(std::find(fleet.taken.begin(), fleet.taken.end(), Lane{4}) == fleet.taken.end());
}

TEST_CASE("store: the outbox trigger notifies only while a relay wants wake-ups", "[store]") {
  auto url = txbox::test::create_database("store");
  pqxx::connection listener(url), writer(url);
  OutboxStore store(listener);
  struct Receiver : pqxx::notification_receiver {
    int count = 0;
    using pqxx::notification_receiver::notification_receiver;
    void operator()(const std::string&, int) override { ++count; }
  } receiver(listener, store.wakeup_channel());

  insert(writer, "a");
  listener.await_notification(0, 300000);
  CHECK(receiver.count == 0);  // nobody wants them: writers pay no NOTIFY

  store.want_wakeups(std::chrono::seconds(5));
  CHECK(scalar(writer, "SELECT pg_sequence_last_value('txbox.relay_wakeup_until') - "
                       "extract(epoch FROM now())::bigint") >= 4);
  {
    pqxx::work tx(writer);
    tx.exec0("INSERT INTO txbox.outbox (destination) VALUES ('x'), ('y')");
    tx.exec0("INSERT INTO txbox.outbox (destination) VALUES ('z')");
    tx.commit();
  }
  listener.await_notification(5, 0);
  CHECK(receiver.count == 1);  // one per transaction

  // A shorter wish never moves the horizon back (another relay's stands).
  const long long horizon = scalar(writer, "SELECT pg_sequence_last_value('txbox.relay_wakeup_until')");
  store.want_wakeups(std::chrono::seconds(1));
  CHECK(scalar(writer, "SELECT pg_sequence_last_value('txbox.relay_wakeup_until')") == horizon);

  // Once it has run out, writers stop notifying.
  {
    pqxx::nontransaction tx(writer);
    tx.exec("SELECT setval('txbox.relay_wakeup_until', extract(epoch FROM now())::bigint - 1)");
  }
  insert(writer, "b");
  listener.await_notification(0, 300000);
  CHECK(receiver.count == 1);
  CHECK_FALSE(store.outbox_empty());
}
