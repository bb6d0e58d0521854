// The relay's pure logic, without servers: the batch plan, lane balance,
// the byte budget, SQLSTATE classification, the connection string, array
// literals, and what reaches the logs.
#include <catch2/catch.hpp>

#include <set>
#include <thread>

#include "batch_plan.hpp"
#include "byte_budget.hpp"
#include "conninfo.hpp"
#include "db_errors.hpp"
#include "lane_balance.hpp"
#include "txbox/outbox/store.hpp"
#include "txbox/relay/cli.hpp"

using namespace txbox::relay;
using txbox::brokers::ErrorClass;
using txbox::brokers::PublishResult;
using Catch::Matchers::Contains;
using namespace std::chrono_literals;

namespace {

PublishResult ok() { return {true, ErrorClass::transient, {}}; }
PublishResult fail(ErrorClass c, std::string why = "boom") { return {false, c, std::move(why)}; }

struct Rows {
  std::vector<std::string> keys;
  std::vector<PlanRow> rows;
  // "a", "b", "" (no key)...
  explicit Rows(std::vector<std::string> k, int attempts = 0) : keys(std::move(k)) {
    for (const auto& key : keys) rows.push_back({key.empty() ? nullptr : &key, attempts, std::nullopt});
  }
};

RetryOptions retry_options() {
  RetryOptions r;
  r.base = 100ms;
  r.factor = 2;
  r.cap = 10s;
  r.max_attempts = 3;
  r.max_retry_age = 0s;
  return r;
}

const auto kNow = std::chrono::system_clock::now();
double one() { return 1.0; }

std::vector<RowAction> actions(const BatchPlan& plan) {
  std::vector<RowAction> out;
  for (const auto& d : plan.rows) out.push_back(d.action);
  return out;
}

}  // namespace

TEST_CASE("batch plan: confirmed rows are removed, permanent ones dead-lettered", "[unit][plan]") {
  Rows rows({"a", "b", "c"});
  std::vector<PublishResult> results{ok(), fail(ErrorClass::permanent, "too large"), ok()};
  auto plan = plan_batch(rows.rows, results, retry_options(), kNow, false, one);
  CHECK(actions(plan) == std::vector{RowAction::remove, RowAction::dead_letter, RowAction::remove});
  CHECK(plan.rows[1].reason == "too large");
  CHECK(plan.removed == 2);
  CHECK(plan.dead_lettered == 1);
  CHECK_FALSE(plan.outage);
}

TEST_CASE("batch plan: a failed row holds back the later rows of its key only", "[unit][plan]") {
  Rows rows({"a", "b", "a", "b", "a", ""});
  std::vector<PublishResult> results{fail(ErrorClass::transient), ok(), ok(), ok(),
                                     fail(ErrorClass::permanent), ok()};
  auto plan = plan_batch(rows.rows, results, retry_options(), kNow, false, one);
  CHECK(actions(plan) == std::vector{RowAction::retry, RowAction::remove, RowAction::held_back, RowAction::remove,
                                     RowAction::held_back, RowAction::remove});
  CHECK(plan.rows[0].delay == 100ms);
  CHECK_THAT(plan.rows[0].reason, Contains("transient error: boom"));
  CHECK(plan.held_back == 2);
  CHECK(plan.confirmed_held_back == 1);  // the second "a" went out but goes again after the first
}

TEST_CASE("batch plan: rows without a key never block each other", "[unit][plan]") {
  Rows rows({"", "", ""});
  std::vector<PublishResult> results{fail(ErrorClass::transient), ok(), fail(ErrorClass::transient)};
  auto plan = plan_batch(rows.rows, results, retry_options(), kNow, false, one);
  CHECK(actions(plan) == std::vector{RowAction::retry, RowAction::remove, RowAction::retry});
}

TEST_CASE("batch plan: backoff grows with the attempts and stops at the cap", "[unit][plan]") {
  auto r = retry_options();
  r.max_attempts = 100;
  for (int attempts : {0, 1, 2, 10}) {
    Rows rows({"a"}, attempts);
    std::vector<PublishResult> results{fail(ErrorClass::transient)};
    auto plan = plan_batch(rows.rows, results, r, kNow, false, [] { return 0.5; });
    const auto expected = std::min<std::chrono::milliseconds>(100ms * (1 << attempts), 10s) / 2;
    CHECK(plan.rows[0].delay == expected);
  }
}

TEST_CASE("batch plan: the retry budget is a count AND a time", "[unit][plan]") {
  auto r = retry_options();
  r.max_attempts = 3;
  r.max_retry_age = 24h;
  std::vector<PublishResult> results{fail(ErrorClass::transient, "leader not available")};
  SECTION("enough attempts, failing for a short while: retried") {
    Rows rows({"a"}, 5);
    rows.rows[0].first_failed_at = kNow - 1h;
    auto plan = plan_batch(rows.rows, results, r, kNow, false, one);
    CHECK(plan.rows[0].action == RowAction::retry);
  }
  SECTION("failing for a day, few attempts: retried") {
    Rows rows({"a"}, 0);
    rows.rows[0].first_failed_at = kNow - 48h;
    auto plan = plan_batch(rows.rows, results, r, kNow, false, one);
    CHECK(plan.rows[0].action == RowAction::retry);
  }
  SECTION("both spent: dead-lettered with the count, the age and the last error") {
    Rows rows({"a"}, 2);
    rows.rows[0].first_failed_at = kNow - 25h;
    auto plan = plan_batch(rows.rows, results, r, kNow, false, one);
    CHECK(plan.rows[0].action == RowAction::dead_letter);
    CHECK(plan.rows[0].error_class == ErrorClass::transient);
    CHECK_THAT(plan.rows[0].reason, Contains("gave up after 3 attempts over 25 h: leader not available"));
  }
  SECTION("a dead-lettered row does not block its key") {
    Rows rows({"a", "a"}, 2);
    rows.rows[0].first_failed_at = kNow - 25h;
    rows.rows[1].attempts = 0;
    std::vector<PublishResult> two{fail(ErrorClass::transient), ok()};
    auto plan = plan_batch(rows.rows, two, r, kNow, false, one);
    CHECK(actions(plan) == std::vector{RowAction::dead_letter, RowAction::remove});
  }
}

TEST_CASE("batch plan: an outage counts no attempt and touches no row", "[unit][plan]") {
  Rows rows({"a", "b", "a"});
  std::vector<PublishResult> results{fail(ErrorClass::transient, "timeout"), fail(ErrorClass::transient),
                                     fail(ErrorClass::outage)};
  CHECK(needs_probe(results));
  auto plan = plan_batch(rows.rows, results, retry_options(), kNow, true, one);
  CHECK(plan.outage);
  CHECK(actions(plan) == std::vector{RowAction::untouched, RowAction::untouched, RowAction::held_back});
  CHECK(plan.retried == 0);
  SECTION("the broker answers a probe: the messages themselves failed, attempts count") {
    auto counted = plan_batch(rows.rows, results, retry_options(), kNow, false, one);
    CHECK_FALSE(counted.outage);
    CHECK(actions(counted) == std::vector{RowAction::retry, RowAction::retry, RowAction::held_back});
  }
}

TEST_CASE("batch plan: outage-class failures beside confirmations count no attempt", "[unit][plan]") {
  Rows rows({"a", "b", "b"});
  std::vector<PublishResult> results{ok(), fail(ErrorClass::outage, "connection lost"), fail(ErrorClass::outage)};
  CHECK_FALSE(needs_probe(results));
  auto plan = plan_batch(rows.rows, results, retry_options(), kNow, false, one);
  CHECK(actions(plan) == std::vector{RowAction::remove, RowAction::untouched, RowAction::held_back});
}

TEST_CASE("batch plan: needs_probe when a message failed transiently, also beside confirmations", "[unit][plan]") {
  CHECK_FALSE(needs_probe(std::vector<PublishResult>{}));
  CHECK_FALSE(needs_probe(std::vector{ok(), fail(ErrorClass::permanent)}));
  CHECK_FALSE(needs_probe(std::vector{ok(), fail(ErrorClass::outage)}));
  // A broker that stops answering mid-batch: the first confirmed, the rest
  // timed out.
  CHECK(needs_probe(std::vector{ok(), fail(ErrorClass::transient)}));
  CHECK(needs_probe(std::vector{fail(ErrorClass::permanent), fail(ErrorClass::transient)}));
  CHECK(needs_probe(std::vector{fail(ErrorClass::transient), fail(ErrorClass::outage)}));
  CHECK(needs_probe(std::vector{fail(ErrorClass::outage), fail(ErrorClass::outage)}));
}

TEST_CASE("batch plan: an outage met mid-batch removes the confirmed rows and counts no attempt for the rest",
          "[unit][plan]") {
  Rows rows({"a", "b", "c"});
  std::vector<PublishResult> results{ok(), fail(ErrorClass::transient, "no delivery report"),
                                     fail(ErrorClass::permanent, "too large")};
  auto plan = plan_batch(rows.rows, results, retry_options(), kNow, true, one);
  CHECK(actions(plan) == std::vector{RowAction::remove, RowAction::untouched, RowAction::dead_letter});
  CHECK(plan.retried == 0);
}

TEST_CASE("lane balance: one relay takes every lane, evenly", "[unit][lanes]") {
  std::vector<std::vector<Lane>> owned(4);
  auto changes = plan_lanes(4, {}, owned, 7);
  std::set<Lane> all;
  for (const auto& c : changes) {
    CHECK(c.acquire.size() == 64);
    CHECK(c.release == 0);
    all.insert(c.acquire.begin(), c.acquire.end());
  }
  CHECK(all.size() == 256);
}

TEST_CASE("lane balance: a new relay gets its share, a killed one's lanes are taken", "[unit][lanes]") {
  // Relay A's 4 workers hold everything; relay B's 4 workers appear.
  std::vector<std::vector<Lane>> a(4);
  std::vector<Lane> taken;
  for (int lane = 0; lane < 256; ++lane) {
    a[static_cast<size_t>(lane % 4)].push_back(static_cast<Lane>(lane));
    taken.push_back(static_cast<Lane>(lane));
  }
  auto give = plan_lanes(8, taken, a, 1);
  for (const auto& c : give) {
    CHECK(c.release == 32);
    CHECK(c.acquire.empty());
  }
  // A gave back half: B takes the free ones.
  std::vector<Lane> still_taken;
  for (auto& lanes : a) {
    lanes.resize(32);
    still_taken.insert(still_taken.end(), lanes.begin(), lanes.end());
  }
  std::vector<std::vector<Lane>> b(4);
  auto take = plan_lanes(8, still_taken, b, 2);
  size_t got = 0;
  for (const auto& c : take) {
    CHECK(c.acquire.size() == 32);
    for (Lane lane : c.acquire) CHECK(std::find(still_taken.begin(), still_taken.end(), lane) == still_taken.end());
    got += c.acquire.size();
  }
  CHECK(got == 128);
  // A is killed: its locks are gone, B's workers reach for 64 each.
  std::vector<std::vector<Lane>> b_now(4);
  std::vector<Lane> b_taken;
  for (size_t w = 0; w < 4; ++w) {
    b_now[w] = take[w].acquire;
    b_taken.insert(b_taken.end(), b_now[w].begin(), b_now[w].end());
  }
  auto after_kill = plan_lanes(4, b_taken, b_now, 3);
  for (const auto& c : after_kill) CHECK(c.acquire.size() == 32);
}

TEST_CASE("lane balance: more workers than a share covers still covers every lane", "[unit][lanes]") {
  CHECK(fair_share(12) == 22);
  CHECK(fair_share(1) == 256);
  CHECK(fair_share(0) == 256);
  CHECK(fair_share(300) == 1);
  std::vector<std::vector<Lane>> owned(12);
  auto changes = plan_lanes(12, {}, owned, 0);
  size_t total = 0;
  for (const auto& c : changes) total += c.acquire.size();
  CHECK(total == 256);
}

TEST_CASE("byte budget: claims share it, an oversized row waits for it all", "[unit][budget]") {
  ByteBudget budget(1000);
  CHECK(budget.try_reserve(600) == 600);
  CHECK(budget.try_reserve(600) == 400);
  CHECK(budget.try_reserve(1) == 0);
  budget.release(1000);
  CHECK(budget.in_use() == 0);

  CHECK(budget.try_reserve(300) == 300);
  std::atomic<bool> granted{false};
  std::jthread big([&](std::stop_token stop) {
    granted = budget.reserve(5000, stop);  // larger than the whole budget: alone
  });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(granted.load());
  CHECK(budget.try_reserve(10) == 0);  // nobody new while it waits
  budget.release(300);
  big.join();
  CHECK(granted.load());
  CHECK(budget.in_use() == 5000);
  CHECK(budget.try_reserve(10) == 0);
  budget.release(5000);
  CHECK(budget.try_reserve(10) == 10);
}

TEST_CASE("byte budget: a stop ends a wait", "[unit][budget]") {
  ByteBudget budget(100);
  CHECK(budget.try_reserve(100) == 100);
  std::stop_source stop;
  std::jthread waiter([&] { CHECK_FALSE(budget.reserve(50, stop.get_token())); });
  std::this_thread::sleep_for(20ms);
  stop.request_stop();
}

TEST_CASE("SQLSTATEs: transient ones are retried, lost sessions reconnected, the rest fatal", "[unit][db]") {
  for (const char* s : {"57014", "40001", "40P01", "55P03", "53100", "53200", "53300", "58030", "XX000", "55006"})
    CHECK(classify_sqlstate(s) == DbFailure::retry);
  for (const char* s : {"08006", "08001", "57P01", "57P02", "57P03", "25006", ""})
    CHECK(classify_sqlstate(s) == DbFailure::reconnect);
  for (const char* s : {"42P01", "42501", "3F000", "57P04", "28P01", "22P02", "XX001"})
    CHECK(classify_sqlstate(s) == DbFailure::fatal);
}

TEST_CASE("connection string: the relay's defaults unless the user set them", "[unit][conninfo]") {
  auto url = relay_conninfo("postgresql://u@h:5432/db", "txbox-relay");
  CHECK(url.conninfo ==
        "postgresql://u@h:5432/db?application_name=txbox-relay&connect_timeout=10&keepalives=1&keepalives_idle=10"
        "&keepalives_interval=5&keepalives_count=3&tcp_user_timeout=30000");
  auto mine = relay_conninfo("postgresql://h/db?keepalives_idle=3&application_name=billing", "txbox-relay");
  CHECK_THAT(mine.conninfo, Contains("keepalives_idle=3"));
  CHECK_THAT(mine.conninfo, !Contains("keepalives_idle=10"));
  CHECK_THAT(mine.conninfo, !Contains("txbox-relay"));
  CHECK(mine.keepalive.idle_seconds == 3);
  CHECK_THAT(mine.session_setup_sql(), Contains("SET tcp_keepalives_idle = 3"));
  CHECK_THAT(mine.session_setup_sql(), Contains("SET tcp_user_timeout = 30000"));
  auto kv = relay_conninfo("host=h dbname=db", "txbox-relay");
  CHECK_THAT(kv.conninfo, Contains("host=h dbname=db application_name='txbox-relay'"));
  CHECK_THROWS_WITH(relay_conninfo("postgresql://u:secret@h/db?nosuch=1", "x"), !Contains("secret"));
  CHECK_THROWS_AS(relay_conninfo("host=h dbname", "x"), txbox::UsageError);
}

TEST_CASE("array literals quote and escape", "[unit][store]") {
  using txbox::outbox::pg_array;
  CHECK(pg_array(std::vector<int64_t>{}) == "{}");
  CHECK(pg_array(std::vector<int64_t>{1, -2, 3}) == "{1,-2,3}");
  CHECK(pg_array(std::vector<txbox::outbox::Lane>{0, 255}) == "{0,255}");
  CHECK(pg_array(std::vector<std::string>{"a", "b,c", "q\"x", "back\\slash", "NULL", ""}) ==
        R"({"a","b,c","q\"x","back\\slash","NULL",""})");
}

TEST_CASE("logs: secrets and control characters never reach a line as they are", "[unit][cli]") {
  CHECK(redact_url("amqp://relay:p@ss/w0rd@rabbit:5672/shop") == "amqp://***@rabbit:5672/shop");
  CHECK(redact_url("connect to postgresql://u:secret@h/db failed") == "connect to postgresql://***@h/db failed");
  CHECK(redact_url("kafka://k1:9092,k2:9092") == "kafka://k1:9092,k2:9092");
  CHECK(redact_url("a nats://t0ken@n:4222 and redis://:pw@r:6379/0") == "a nats://***@n:4222 and redis://***@r:6379/0");
  CHECK(redact_url("host=h password='se cret' dbname=x") == "host=h password=*** dbname=x");
  CHECK(escape_control("orders\n2026-01-01 error forged") == "orders\\n2026-01-01 error forged");
  CHECK(escape_control(std::string("a\r\tb\x01\x7f", 6)) == "a\\r\\tb\\x01\\x7f");
  CHECK(escape_control("plain ü") == "plain ü");
}
