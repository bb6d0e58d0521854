#pragma once
// Shared steps of the fault tests: fill the outbox with a known set, run the
// relay binary, consume everything through the inbox, and check that every
// message was applied exactly once in per-key order.

#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/effects_consumer.hpp"
#include "support/outbox_sql.hpp"
#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/kafka/kafka.hpp"
#include "txbox/outbox/outbox.hpp"

namespace txbox::test {

inline long long scalar(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<long long>();
}

inline long long outbox_rows(const std::string& url) { return scalar(url, "SELECT count(*) FROM txbox.outbox"); }

// n messages to `topic`, key "key-<i % keys>", payload "key-<k>:<sequence in key>".
inline void fill_outbox(const std::string& url, const std::string& topic, int n, int keys) {
  pqxx::connection conn(url);
  outbox::Outbox outbox;
  std::vector<outbox::Message> batch;
  for (int i = 0; i < n; ++i) {
    std::string key = "key-" + std::to_string(i % keys);
    batch.push_back({topic, key, key + ":" + std::to_string(i / keys), {}, {}});
    if (batch.size() == 5000 || i + 1 == n) {
      pqxx::work tx(conn);
      outbox.enqueue(tx, batch);
      tx.commit();
      batch.clear();
    }
  }
}

// txbox-relay draining the outbox of `db_url` into `broker_url` (any
// broker: kafka://, amqp://, nats://, redis://), polling every 20 ms.
inline std::vector<std::string> relay_drain_command(const std::string& db_url, const std::string& broker_url,
                                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args{binary_path("txbox-relay"), "--database-url", db_url, "--broker-url", broker_url,
                                "--drain", "--poll-interval", "20"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// The same into the Kafka cluster at `bootstrap`.
inline std::vector<std::string> relay_command(const std::string& url, const std::string& bootstrap,
                                              std::vector<std::string> extra = {}) {
  return relay_drain_command(url, "kafka://" + bootstrap, std::move(extra));
}

// Follows, message by message, the per-key order of payloads fill_outbox
// wrote ("<key>:<sequence in key>"): counts each message whose sequence is
// not the next of its key, and REQUIREs each message's key to be its
// payload's.
class PerKeySequence {
 public:
  void add(const brokers::Message& message) {
    auto colon = message.payload.find(':');
    std::string key = message.payload.substr(0, colon);
    int sequence = std::stoi(message.payload.substr(colon + 1));
    REQUIRE(message.key == std::optional<std::string>(key));
    if (sequence != next_sequence_[key]) ++violations_;
    next_sequence_[key] = sequence + 1;
  }
  int violations() const { return violations_; }

 private:
  std::map<std::string, int> next_sequence_;  // per key: the sequence expected next
  int violations_ = 0;
};

// Polls `condition` every 10 ms until it holds or `timeout` passes.
template <typename Condition>
bool wait_for(Condition condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

// The URL with asynchronous commit, to keep consumer-heavy tests fast: the
// inbox logic does not depend on it.
inline std::string fast_commit(const std::string& url) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-c%20synchronous_commit%3Doff";
}

// What consume_broker_into_effects does once n messages are processed.
enum class AfterProcessed {
  read_leftovers,  // poll on until nothing comes: duplicates still queued
  stop,
};

// Consumes through the inbox "verify" into `effects` (created first) with
// the consumer `make_consumer` returns, until n messages are processed or
// `timeout` passes; closes the consumer.
inline consumer::ConsumeStats consume_broker_into_effects(
    const std::string& url, const std::function<std::unique_ptr<brokers::Consumer>()>& make_consumer, long long n,
    std::chrono::seconds timeout, AfterProcessed after = AfterProcessed::read_leftovers) {
  create_effects_table(url);
  auto broker_consumer = make_consumer();
  consumer::InboxConsumer inbox_consumer(*broker_consumer, fast_commit(url), inbox::Inbox("verify"), record_effect);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  inbox_consumer.run({}, [&](const consumer::ConsumeStats& s) {
    return static_cast<long long>(s.processed) >= n || std::chrono::steady_clock::now() > deadline;
  });
  if (after == AfterProcessed::read_leftovers) {
    while (inbox_consumer.poll_once()) {
    }
  }
  broker_consumer->close();
  return inbox_consumer.stats();
}

// Consumes `topic` through the inbox into `effects` until it holds n rows.
inline consumer::ConsumeStats consume_into_effects(const std::string& url, const std::string& bootstrap,
                                                   const std::string& topic, long long n,
                                                   std::chrono::seconds timeout = std::chrono::seconds(240)) {
  return consume_broker_into_effects(
      url,
      [&] {
        kafka::ConsumerOptions options;
        options.bootstrap_servers = bootstrap;
        options.group_id = unique_name("verify");
        options.topics = {topic};
        return kafka::make_consumer(options);
      },
      n, timeout);
}

// Every one of the n messages applied exactly once, each key in order.
inline void check_effects(const std::string& url, long long n) {
  CHECK(scalar(url, "SELECT count(*) FROM effects") == n);
  CHECK(scalar(url, "SELECT count(DISTINCT message_id) FROM effects") == n);
  CHECK(scalar(url, "SELECT count(DISTINCT payload) FROM effects") == n);
  // Per key, the sequence numbers grow in the order the consumer applied them.
  CHECK(scalar(url,
               "SELECT count(*) FROM (SELECT split_part(payload, ':', 2)::int AS s, "
               "lag(split_part(payload, ':', 2)::int) OVER (PARTITION BY message_key ORDER BY seq) AS prev "
               "FROM effects) x WHERE prev IS NOT NULL AND s <= prev") == 0);
}

// Runs the consumer program `command` (inbox consumer "billing") `kills`
// times, each time SIGKILLed once `effects` has grown by messages / portions
// rows (or it has exited) and REQUIREd not to be done yet; then runs it to
// the end: every message applied exactly once, in per-key order, with one
// inbox row each.
inline void kill_consumer_then_finish(const std::string& url, const std::vector<std::string>& command,
                                      const std::string& log, long long messages, int kills, long long portions) {
  long long applied = 0;
  std::mt19937 random(std::random_device{}());
  for (int kill = 0; kill < kills; ++kill) {
    Process consumer(command, log);
    long long target = applied + messages / portions;
    wait_for([&] { return scalar(url, "SELECT count(*) FROM effects") >= target || !consumer.running(); },
             std::chrono::seconds(120));
    // At a random point past the mark: inside a batch, between the commit
    // and the acks, or while lanes wait.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 50)(random)));
    consumer.signal(SIGKILL);
    consumer.wait(std::chrono::seconds(10));
    const long long before = applied;
    applied = scalar(url, "SELECT count(*) FROM effects");
    INFO("kill " << kill << ": " << applied << " applied");
    CHECK(applied > before);     // progress since the last kill
    REQUIRE(applied < messages);  // and work left at this one
  }
  Process consumer(command, log);
  REQUIRE(consumer.wait(std::chrono::minutes(4)) == std::optional<int>(0));
  check_effects(url, messages);
  CHECK(scalar(url, "SELECT count(*) FROM txbox.inbox WHERE consumer = 'billing'") == messages);
}

// `d` is the row insert_sql_order_row wrote with `message_id`, delivered
// from `source`: key, payload and content-type header unchanged.
inline void check_sql_order_delivery(const brokers::Delivery& d, const std::string& source,
                                     const std::string& message_id) {
  CHECK(d.source == source);
  CHECK(d.message.key == std::optional<std::string>("order-42"));
  CHECK(d.message.payload == "{\"id\":42}");
  CHECK(d.message.message_id == message_id);
  std::string content_type = "<missing>";
  for (const auto& [name, value] : d.message.headers)
    if (name == "content-type") content_type = value;
  CHECK(content_type == "application/json");
}

inline std::string read_file(const std::string& path) {
  auto r = run({"/bin/cat", path});
  return r.output;
}

inline int count_lines_with(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

}  // namespace txbox::test
