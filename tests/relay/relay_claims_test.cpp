// The relay's claim loop against real servers: nobody's row lock makes a key
// overtake itself, rows waiting for a retry cost no busy loop, transient
// database errors are survived, a partial outage costs no dead letters, an
// outage counts no attempts, lanes move when relays come and go, an idle
// relay is woken by a commit, and what reaches the logs is one line per event.
#include <catch2/catch.hpp>
#include <csignal>
#include <map>
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "../fault/fault_support.hpp"
#include "kafka_support.hpp"
#include "support/kafka_mock.hpp"
#include "support/process.hpp"
#include "txbox/outbox/outbox.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

// Commits counted by the server for this database. The statistics of idle
// sessions reach it up to ~10 s late, so measure over long windows.
long long commits(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  tx.exec("SELECT pg_stat_clear_snapshot()");
  return tx.exec1("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")[0]
      .as<long long>();
}

// Lanes held, per backend pid of a relay worker.
std::map<int, int> lanes_by_pid(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  std::map<int, int> out;
  for (const auto& row : tx.exec(
           "SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 29816 AND objsubid = 2 "
           "AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
           "GROUP BY pid"))
    out[row[0].as<int>()] = row[1].as<int>();
  return out;
}

int lanes_of(const std::map<int, int>& by_pid, const std::set<int>& pids) {
  int n = 0;
  for (const auto& [pid, count] : by_pid)
    if (pids.contains(pid)) n += count;
  return n;
}

std::set<int> relay_pids(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  std::set<int> pids;
  for (const auto& row : tx.exec("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                                 "application_name = 'txbox-relay'"))
    pids.insert(row[0].as<int>());
  return pids;
}

std::vector<std::string> relay_args(const std::string& url, const std::string& bootstrap,
                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args{test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                                "kafka://" + bootstrap};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Transactions in `url` during 20 s of a relay running there, after 12 s to
// settle (lanes taken, statistics caught up).
long long relay_transactions_in_20s(const std::string& url) {
  test::Process relay(relay_args(url, test::kafka_bootstrap()), "/tmp/" + test::unique_name("quiet") + ".log");
  std::this_thread::sleep_for(12s);
  const long long before = commits(url);
  std::this_thread::sleep_for(20s);
  CHECK(relay.running());
  return commits(url) - before;
}

// Payload "<key>:<sequence>" per key: true when the first occurrence of
// every message of a key comes in sequence order.
int first_occurrence_order_violations(const std::vector<txbox::brokers::Delivery>& deliveries) {
  std::set<std::string> seen;
  std::map<std::string, int> next;
  int violations = 0;
  for (const auto& d : deliveries) {
    if (!seen.insert(d.message.payload).second) continue;
    auto colon = d.message.payload.find(':');
    if (colon == std::string::npos) continue;
    std::string key = d.message.payload.substr(0, colon);
    int sequence = std::stoi(d.message.payload.substr(colon + 1));
    if (sequence != next[key]) ++violations;
    next[key] = sequence + 1;
  }
  return violations;
}

}  // namespace

TEST_CASE("a row another session has locked is published in its key's order, not skipped, and its new version "
          "goes too",
          "[relay][claims]") {
  auto url = test::create_database("overtake");
  auto topic = test::unique_name("orders");
  constexpr int kPerKey = 50;
  test::fill_outbox(url, topic, kPerKey * 4, 4);  // key-0..key-3, payload key-k:seq
  pqxx::connection op(url);
  pqxx::work hold(op);
  // An operator edits key-1's first row and has not committed yet.
  const auto locked = hold.exec1(
      "UPDATE txbox.outbox SET headers = '{\"fixed\":\"yes\"}' WHERE id = (SELECT min(id) FROM txbox.outbox "
      "WHERE message_key = 'key-1') RETURNING id")[0].as<long long>();
  test::Process relay(relay_args(url, test::kafka_bootstrap(), {"--drain", "--poll-interval", "50"}),
                      "/tmp/" + topic + ".log");
  // Everything but the locked row goes out and is deleted; the locked row
  // is published too (its committed version) but cannot be deleted yet.
  CHECK(test::wait_for([&] { return test::outbox_rows(url) <= 1; }, 120s));
  CHECK(relay.running());
  hold.commit();  // the new version is not what was published: it goes again
  REQUIRE(relay.wait(120s) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  auto deliveries = test::consume_topic(topic, kPerKey * 4 + 1);
  CHECK(first_occurrence_order_violations(deliveries) == 0);
  std::set<std::string> payloads;
  int fixed = 0;
  for (const auto& d : deliveries) {
    payloads.insert(d.message.payload);
    if (test::header(d.message, "fixed") == "yes") {
      ++fixed;
      CHECK(d.message.payload == "key-1:0");
    }
  }
  CHECK(payloads.size() == kPerKey * 4);
  CHECK(fixed == 1);
  INFO("locked row id " << locked);
}

TEST_CASE("rows waiting for their retry time cost an idle relay almost no statements", "[relay][claims]") {
  auto url = test::create_database("busyloop");
  {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, attempts, next_attempt_at, first_failed_at) "
             "SELECT 'orders', 'key-' || i, 1, now() + interval '1 hour', now() FROM generate_series(1, 5000) i");
  }
  const long long during = relay_transactions_in_20s(url);
  INFO("transactions in 20 s with 5,000 rows waiting for a retry an hour away: " << during);
  // One fleet look per second (the balance check and fallback poll), plus
  // slack for the statistics' lag. The first relay core ran ~8,000 a second.
  CHECK(during <= 100);
  CHECK(test::outbox_rows(url) == 5000);
  CHECK(test::scalar(url, "SELECT max(attempts) FROM txbox.outbox") == 1);
}

TEST_CASE("an idle relay runs at most a couple of statements a second", "[relay][claims]") {
  auto url = test::create_database("idle");
  const long long during = relay_transactions_in_20s(url);
  INFO("transactions of an idle relay (4 workers) in 20 s: " << during);
  CHECK(during <= 60);  // ~1 a second, with slack for the statistics' lag
}

TEST_CASE("an idle relay is woken by a commit, long before its poll interval", "[relay][claims]") {
  auto url = test::create_database("wakeup");
  auto topic = test::unique_name("orders");
  test::Process relay(relay_args(url, test::kafka_bootstrap(), {"--poll-interval", "600000"}),
                      "/tmp/" + topic + ".log");
  // The idle relay wants notifications: the trigger's horizon is ahead.
  CHECK(test::wait_for(
      [&] {
        return test::scalar(url, "SELECT coalesce(pg_sequence_last_value('txbox.relay_wakeup_until') > "
                                 "extract(epoch FROM now()), false)::int") == 1;
      },
      60s));
  std::this_thread::sleep_for(2s);
  for (int i = 0; i < 5; ++i) {
    test::fill_outbox(url, topic, 1, 1);
    CHECK(test::wait_for([&] { return test::outbox_rows(url) == 0; }, 20s));
  }
  CHECK(relay.running());
}

TEST_CASE("transient database errors are retried: cancelled, deadlocked, serialization, lock timeout, "
          "read-only",
          "[relay][claims]") {
  for (const char* sqlstate : {"57014", "40P01", "40001", "55P03", "25006"}) {
    DYNAMIC_SECTION("SQLSTATE " << sqlstate) {
      auto url = test::create_database("sqlstate");
      auto topic = test::unique_name("orders");
      test::fill_outbox(url, topic, 2000, 50);
      {
        // The first 9 deletes of a row fail with this SQLSTATE (a sequence
        // is not rolled back with the failing statement). More than two per
        // worker: a lock timeout on a completion is first met by the
        // variant that skips locked rows, and that one must fail too.
        pqxx::connection conn(url);
        pqxx::nontransaction tx(conn);
        tx.exec0("CREATE SEQUENCE fault_seq");
        tx.exec0(std::string("CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                             "IF nextval('fault_seq') <= 9 THEN RAISE EXCEPTION 'injected fault' USING ERRCODE = '") +
                 sqlstate + "'; END IF; RETURN OLD; END $$");
        tx.exec0("CREATE TRIGGER fault BEFORE DELETE ON txbox.outbox FOR EACH ROW EXECUTE FUNCTION fault()");
      }
      auto log = "/tmp/" + topic + ".log";
      test::Process relay(relay_args(url, test::kafka_bootstrap(), {"--drain", "--poll-interval", "50"}), log);
      REQUIRE(relay.wait(180s) == std::optional<int>(0));
      CHECK(test::outbox_rows(url) == 0);
      CHECK(test::scalar(url, "SELECT last_value FROM fault_seq") > 9);  // the fault struck, then deletes went on
      auto output = test::read_file(log);
      CHECK(test::count_lines_with(output, std::string("SQLSTATE ") + sqlstate) >= 1);
      // One line per change of state (a worker's trouble begins), never one
      // per retry: at most one per fault.
      CHECK(test::count_lines_with(output, std::string("SQLSTATE ") + sqlstate) <= 9);
      auto deliveries = test::consume_topic(topic, 2000);
      std::set<std::string> payloads;
      for (const auto& d : deliveries) payloads.insert(d.message.payload);
      CHECK(payloads.size() == 2000);
      CHECK(first_occurrence_order_violations(deliveries) == 0);
    }
  }
}

TEST_CASE("a relay whose statements are cancelled again and again finishes its drain", "[relay][claims]") {
  auto url = test::create_database("cancel");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, 20000, 200);
  auto log = "/tmp/" + topic + ".log";
  test::Process relay(relay_args(url, test::kafka_bootstrap(), {"--drain", "--batch-size", "100"}), log);
  pqxx::connection admin(url);
  int cancelled = 0;
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while (relay.running() && std::chrono::steady_clock::now() < deadline) {
    pqxx::nontransaction tx(admin);
    cancelled += tx.exec1(
                       "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity WHERE "
                       "datname = current_database() AND application_name = 'txbox-relay' AND state = 'active'")[0]
                     .as<int>();
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(relay.wait(60s) == std::optional<int>(0));
  INFO("statements cancelled: " << cancelled);
  CHECK(cancelled > 0);
  CHECK(test::outbox_rows(url) == 0);
  CHECK(test::count_lines_with(test::read_file(log), "SQLSTATE 57014") >= 1);
}

TEST_CASE("a leaderless partition costs no dead letters within the retry age, its messages go once it is back",
          "[relay][claims][fault]") {
  test::KafkaMock kafka(1);
  auto url = test::create_database("leaderless");
  auto topic = test::unique_name("orders");
  kafka.control("topic-create " + topic + " 2 1");
  kafka.control("partition-leader " + topic + " 0 -1");
  constexpr int kMessages = 2000, kKeys = 40;
  test::fill_outbox(url, topic, kMessages, kKeys);
  auto log = "/tmp/" + topic + ".log";
  test::Process relay(relay_args(url, kafka.bootstrap(),
                                 {"--drain", "--poll-interval", "50", "--max-attempts", "2", "--retry-base", "100",
                                  "--retry-cap", "400", "--publish-timeout", "1000"}),
                      log);
  // The keys on partition 1 drain; those on partition 0 are retried far
  // past --max-attempts without being dead-lettered.
  CHECK(test::wait_for(
      [&] { return test::scalar(url, "SELECT coalesce(min(attempts), 0) FROM txbox.outbox WHERE attempts > 0") >= 4; },
      120s));
  const long long waiting = test::outbox_rows(url);
  INFO("rows waiting for the partition: " << waiting);
  CHECK(waiting > 0);
  CHECK(waiting < kMessages);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
  kafka.control("partition-leader " + topic + " 0 1");
  REQUIRE(relay.wait(180s) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
  test::consume_into_effects(url, kafka.bootstrap(), topic, kMessages);
  test::check_effects(url, kMessages);
}

TEST_CASE("a broker that answers nothing is an outage: no attempt is counted", "[relay][claims][fault]") {
  test::KafkaMock kafka(1);
  auto url = test::create_database("silent");
  auto topic = test::unique_name("orders");
  constexpr int kMessages = 20000, kKeys = 100;
  test::fill_outbox(url, topic, kMessages, kKeys);
  auto log = "/tmp/" + topic + ".log";
  test::Process relay(relay_args(url, kafka.bootstrap(),
                                 {"--drain", "--poll-interval", "50", "--batch-size", "100", "--max-attempts", "1",
                                  "--max-retry-age", "0s", "--publish-timeout", "2000", "--probe-timeout", "1000"}),
                      log);
  CHECK(test::wait_for([&] { return test::outbox_rows(url) < kMessages * 3 / 4; }, 120s));
  kafka.signal(SIGSTOP);  // connections stay open, nothing answers
  const long long left_at_stop = test::outbox_rows(url);
  std::this_thread::sleep_for(10s);
  CHECK(relay.running());
  kafka.signal(SIGCONT);
  REQUIRE(relay.wait(240s) == std::optional<int>(0));
  INFO("rows left when the broker stopped answering: " << left_at_stop);
  CHECK(left_at_stop > 0);
  CHECK(test::outbox_rows(url) == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
  auto output = test::read_file(log);
  CHECK(test::count_lines_with(output, "broker unavailable") >= 1);
  CHECK(test::count_lines_with(output, "broker unavailable") <= 8);
  test::consume_into_effects(url, kafka.bootstrap(), topic, kMessages);
  test::check_effects(url, kMessages);
}

TEST_CASE("a new relay gets its share of the lanes, a killed relay's lanes move to the survivor within 10 s",
          "[relay][claims]") {
  auto url = test::create_database("lanes");
  test::Process a(relay_args(url, test::kafka_bootstrap()), "/tmp/" + test::unique_name("lanes-a") + ".log");
  REQUIRE(test::wait_for([&] { return lanes_of(lanes_by_pid(url), relay_pids(url)) == 256; }, 60s));
  const std::set<int> a_pids = relay_pids(url);
  test::Process b(relay_args(url, test::kafka_bootstrap()), "/tmp/" + test::unique_name("lanes-b") + ".log");
  std::set<int> b_pids;
  CHECK(test::wait_for(
      [&] {
        b_pids.clear();
        for (int pid : relay_pids(url))
          if (!a_pids.contains(pid)) b_pids.insert(pid);
        auto held = lanes_by_pid(url);
        return lanes_of(held, b_pids) >= 120 && lanes_of(held, a_pids) <= 136 &&
               lanes_of(held, a_pids) + lanes_of(held, b_pids) == 256;
      },
      30s));
  a.signal(SIGKILL);
  a.wait(10s);
  const auto killed = std::chrono::steady_clock::now();
  const bool moved = test::wait_for([&] { return lanes_of(lanes_by_pid(url), b_pids) == 256; }, 30s);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed);
  INFO("lanes moved to the survivor after " << took.count() << " ms");
  CHECK(moved);
  CHECK(took < 10s);
}

TEST_CASE("a destination with a newline cannot forge a log line", "[relay][claims]") {
  auto url = test::create_database("logs");
  {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    // Bad headers as well: the row is dead-lettered, and that is logged
    // with its destination.
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, headers) VALUES "
             "(E'orders\\n2026-01-01T00:00:00.000 error txbox-relay: FORGED', 'k', '[\"x\"]')");
  }
  auto log = "/tmp/" + test::unique_name("logs") + ".log";
  test::Process relay(relay_args(url, test::kafka_bootstrap(), {"--drain", "--poll-interval", "50"}), log);
  REQUIRE(relay.wait(120s) == std::optional<int>(0));
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 1);
  auto output = test::read_file(log);
  CHECK_THAT(output, Contains("orders\\n2026-01-01T00:00:00.000 error txbox-relay: FORGED"));
  for (size_t start = 0; start < output.size();) {
    auto end = output.find('\n', start);
    auto line = output.substr(start, end == std::string::npos ? std::string::npos : end - start);
    CHECK_FALSE(line.starts_with("2026-01-01T00:00:00.000"));
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

TEST_CASE("a broker password with '@' and '/' never appears in the relay's output", "[relay][claims]") {
  auto url = test::create_database("secret");
  for (const std::string broker : {"amqp://relay:s3cr@t/pw@127.0.0.1:1/", "redis://:s3cr@t/pw@127.0.0.1:1",
                                   "nats://relay:s3cr@t/pw@127.0.0.1:1"}) {
    auto r = test::run({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url", broker, "--drain"},
                       60s);
    INFO(r.output);
    CHECK_THAT(r.output, !Contains("s3cr"));
    CHECK_THAT(r.output, !Contains("t/pw"));
    CHECK_THAT(r.output, !Contains("pw@"));
  }
}
