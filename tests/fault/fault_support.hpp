#pragma once
// Shared steps of the fault tests: fill the outbox with a known set, run the
// relay binary, consume everything through the inbox, and check that every
// message was applied exactly once in per-key order.

#include <catch2/catch.hpp>
#include <chrono>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "support/effects_consumer.hpp"
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

inline std::vector<std::string> relay_command(const std::string& url, const std::string& bootstrap,
                                              std::vector<std::string> extra = {}) {
  std::vector<std::string> args{binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                                "kafka://" + bootstrap, "--drain", "--poll-interval", "20"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

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

// Consumes `topic` through the inbox into `effects` until it holds n rows.
inline consumer::ConsumeStats consume_into_effects(const std::string& url, const std::string& bootstrap,
                                                   const std::string& topic, long long n,
                                                   std::chrono::seconds timeout = std::chrono::seconds(240)) {
  create_effects_table(url);
  kafka::ConsumerOptions options;
  options.bootstrap_servers = bootstrap;
  options.group_id = unique_name("verify");
  options.topics = {topic};
  auto kafka_consumer = kafka::make_consumer(options);
  consumer::InboxConsumer inbox_consumer(
      *kafka_consumer, fast_commit(url), inbox::Inbox("verify"),
      record_effect);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  inbox_consumer.run({}, [&](const consumer::ConsumeStats& s) {
    return static_cast<long long>(s.processed) >= n || std::chrono::steady_clock::now() > deadline;
  });
  while (inbox_consumer.poll_once()) {  // duplicates still queued
  }
  kafka_consumer->close();
  return inbox_consumer.stats();
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
