// The publisher against a private, durable redis-server (scripts/redis.sh:
// AOF, fsync always) that is reconfigured or killed: the per-key chain when
// a key's first message hits OOM, the script cache flushed under a batch,
// and the server killed mid-stream of keyed batches and restarted.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "redis_client.hpp"

namespace test = txbox::test;
namespace rt = txbox::test::redis;
using Catch::Matchers::Contains;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;
using txbox::brokers::PublishResult;
using namespace std::chrono_literals;

namespace {
std::string describe(const std::vector<PublishResult>& results) {
  std::string out;
  for (size_t i = 0; i < results.size(); ++i)
    out += fmt::format("[{}] {} {} {}\n", i, results[i].confirmed ? "confirmed" : "failed",
                       to_string(results[i].error_class), results[i].error);
  return out;
}

std::vector<std::string> ids_of(const std::vector<rt::Entry>& entries) {
  std::vector<std::string> ids;
  for (const auto& e : entries) ids.push_back(e.fields.at("message-id"));
  return ids;
}

// PING on a fresh connection: false when no answer comes within `timeout`.
bool answers_ping(int port, std::chrono::milliseconds timeout) {
  timeval tv{0, static_cast<suseconds_t>(std::chrono::microseconds(timeout).count())};
  std::unique_ptr<redisContext, decltype(&redisFree)> context(redisConnectWithTimeout("127.0.0.1", port, tv),
                                                              &redisFree);
  if (!context || context->err) return false;
  redisSetTimeout(context.get(), tv);
  rt::Reply reply(static_cast<redisReply*>(redisCommand(context.get(), "PING")));
  return reply != nullptr;
}

long long errorstat(rt::Client& client, const std::string& code) {
  auto stat = client.info("errorstats", "errorstat_" + code);  // "count=N"
  return stat.empty() ? 0 : std::stoll(stat.substr(stat.find('=') + 1));
}
}  // namespace

TEST_CASE("redis chain: a key's first message hits OOM, its second is refused and not stored, both go in order later",
          "[fault]") {
  rt::PrivateRedis redis;
  rt::Client admin(redis.url());
  auto publisher = rt::publisher(redis.url());
  const std::string stream = "orders";
  constexpr size_t kBig = 8u << 20;
  std::vector<Message> messages{
      {test::unique_name("big"), stream, std::string("k"), std::string(kBig, 'x'), {}},
      {test::unique_name("small"), stream, std::string("k"), "small", {}},
      // Another key, unchained: proves a small command right after the big
      // one is stored, i.e. the second message of "k" would have been too.
      {test::unique_name("control"), stream, std::string("j"), "control", {}},
  };
  // While the big command runs the server holds its argument and a query
  // buffer of the same size; once it is done only the buffer remains. A
  // limit between the two makes exactly the big command fail.
  const long long used = std::stoll(admin.info("memory", "used_memory"));
  admin.cmd({"CONFIG", "SET", "maxmemory", std::to_string(used + static_cast<long long>(kBig) * 9 / 5)});
  auto results = publisher->publish(messages, 60s);
  INFO(describe(results));
  REQUIRE(results.size() == 3);
  REQUIRE(results[2].confirmed);  // the fault struck only the big command
  CHECK_FALSE(results[0].confirmed);
  CHECK(results[0].error_class == ErrorClass::transient);
  CHECK_THAT(results[0].error, Contains("out of memory") && Contains("raise maxmemory") && Contains("will be retried"));
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == ErrorClass::transient);
  CHECK_THAT(results[1].error, Contains("earlier message of its key in the same batch was not stored") &&
                                   Contains("will be retried after it"));
  CHECK(ids_of(admin.xrange(stream)) == std::vector<std::string>{messages[2].message_id});
  CHECK_FALSE(admin.exists("txbox:dedup:" + stream + ":" + messages[0].message_id));
  CHECK_FALSE(admin.exists("txbox:dedup:" + stream + ":" + messages[1].message_id));
  CHECK(publisher->healthy());  // OOM is not an outage: the server answers
  CHECK(publisher->probe(5s));

  admin.cmd({"CONFIG", "SET", "maxmemory", "0"});  // the condition is fixed
  auto again = publisher->publish(std::span(messages).first(2), 60s);
  INFO(describe(again));
  CHECK(again[0].confirmed);
  CHECK(again[1].confirmed);
  CHECK(ids_of(admin.xrange(stream)) ==
        std::vector<std::string>{messages[2].message_id, messages[0].message_id, messages[1].message_id});
}

TEST_CASE("redis: script cache flushed under a pooled connection: NOSCRIPT, reload, every message once in order",
          "[fault]") {
  rt::PrivateRedis redis;
  rt::Client admin(redis.url());
  auto publisher = rt::publisher(redis.url());
  const std::string stream = "orders";
  REQUIRE(publisher->publish(std::vector<Message>{{test::unique_name("warm"), stream, std::nullopt, "w", {}}}, 10s)
              .at(0)
              .confirmed);
  admin.cmd({"SCRIPT", "FLUSH"});
  const auto noscript_before = errorstat(admin, "NOSCRIPT");
  std::vector<Message> messages;
  for (int i = 0; i < 30; ++i)
    messages.push_back({test::unique_name("m"), stream, fmt::format("key-{}", i % 3), std::to_string(i), {}});
  auto results = publisher->publish(messages, 30s);
  INFO(describe(results));
  for (const auto& r : results) CHECK(r.confirmed);
  // The fault struck the batch's script call (the 30 messages share one).
  CHECK(errorstat(admin, "NOSCRIPT") - noscript_before == 1);
  auto ids = ids_of(admin.xrange(stream));
  REQUIRE(ids.size() == 31);
  for (int i = 0; i < 30; ++i) CHECK(ids[i + 1] == messages[i].message_id);
}

TEST_CASE(
    "redis: server killed between start() and wait(), then restarted under a pooled connection: outage, "
    "nothing sent again, no SIGPIPE, probe() reconnects",
    "[fault]") {
  rt::PrivateRedis redis;
  auto publisher = rt::publisher(redis.url());  // its connection is in the pool
  const std::string stream = "orders";
  std::vector<Message> messages;
  for (int i = 0; i < 50; ++i)
    messages.push_back({test::unique_name("m"), stream, fmt::format("key-{}", i % 5), std::to_string(i), {}});
  // A script that keeps the server busy (it answers nobody) for 20 s: the
  // batch written by start() waits, unread, in the socket while the server
  // is killed.
  test::Process busy({"/usr/bin/env", "redis-cli", "-p", std::to_string(redis.port()), "EVAL",
                      "local s = tonumber(redis.call('TIME')[1]) "
                      "while tonumber(redis.call('TIME')[1]) - s < 20 do end return 1",
                      "0"});
  bool server_busy = false;
  for (auto until = std::chrono::steady_clock::now() + 15s; !server_busy && std::chrono::steady_clock::now() < until;)
    server_busy = !answers_ping(redis.port(), 300ms);
  REQUIRE(server_busy);
  auto pending = publisher->start(messages);
  redis.kill();
  const auto started_wait = std::chrono::steady_clock::now();
  auto results = pending->wait(started_wait + 30s);
  INFO(describe(results));
  CHECK(std::chrono::steady_clock::now() - started_wait < 20s);  // the loss ends the wait, not the deadline
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::outage);
    CHECK_THAT(r.error, Contains("was lost") && Contains("will be retried"));
  }
  CHECK_FALSE(publisher->healthy());
  CHECK_FALSE(publisher->probe(1s));

  redis.start();  // the AOF holds nothing of the batch
  rt::Client client(redis.url());
  CHECK(client.integer({"EXISTS", stream}) == 0);  // not stored, and not sent again on a new connection
  CHECK(publisher->probe(5s));
  CHECK(publisher->healthy());
  auto again = publisher->publish(messages, 30s);
  INFO(describe(again));
  for (const auto& r : again) CHECK(r.confirmed);
  CHECK(ids_of(client.xrange(stream)).size() == messages.size());

  // A clean restart while the publisher is idle: its pooled connection is
  // dead. A large batch started on it: the first write goes out, the server
  // answers with a reset, the next write fails (EPIPE: SIGPIPE, which must
  // not end the process). The batch fails as an outage, nothing stored.
  redis.stop();
  redis.start();
  std::vector<Message> large;
  for (int i = 0; i < 2000; ++i)
    large.push_back({test::unique_name("large"), "large", fmt::format("key-{}", i % 5), std::string(8192, 'x'), {}});
  auto stale = publisher->publish(large, 30s);
  const auto lost = std::count_if(stale.begin(), stale.end(), [](const PublishResult& r) {
    return !r.confirmed && r.error_class == ErrorClass::outage && r.error.find("was lost") != std::string::npos;
  });
  CHECK(lost == static_cast<long>(large.size()));
  CHECK(rt::Client(redis.url()).integer({"EXISTS", "large"}) == 0);
  // Another clean restart: probe() finds the dead pooled connection and
  // connects anew within its timeout.
  redis.stop();
  redis.start();
  CHECK(publisher->probe(5s));
  std::vector<Message> after{{test::unique_name("after"), stream, std::string("key-0"), "after", {}}};
  CHECK(publisher->publish(after, 10s).at(0).confirmed);
  CHECK(rt::Client(redis.url()).xlen(stream) == static_cast<long long>(messages.size()) + 1);
}

TEST_CASE(
    "redis: server killed mid-stream of keyed batches and restarted: per key no later message before an "
    "earlier one, every confirmed message kept",
    "[fault]") {
  constexpr int kThreads = 2, kGroups = 2, kKeysPerGroup = 10, kPerKey = 200, kPerKeyPerBatch = 8;
  constexpr long kTotal = long{kThreads} * kGroups * kKeysPerGroup * kPerKey;
  rt::PrivateRedis redis;
  auto publisher = rt::publisher(redis.url() + "?connect_timeout_ms=1000");
  const std::string stream = "orders";
  const std::string payload(512, 'p');
  auto message_id = [](const std::string& key, int seq) { return fmt::format("{}-{:04}", key, seq); };

  std::atomic<long> confirmed_total{0}, outage_results{0}, probes_false{0}, mixed_batches{0};
  std::atomic<bool> give_up{false};
  std::mutex mutex;
  std::set<std::string> confirmed_ids;
  std::vector<std::string> violations;

  // One relay worker's discipline: two batches in flight (disjoint key
  // groups); a key's failed message and everything after it stay at the
  // head of its queue; after a pair of batches with nothing confirmed, probe
  // and back off.
  auto worker = [&](int t) {
    std::vector<std::vector<std::string>> keys(kGroups);
    std::map<std::string, int> next;
    for (int g = 0; g < kGroups; ++g)
      for (int k = 0; k < kKeysPerGroup; ++k) {
        keys[g].push_back(fmt::format("t{}-g{}-k{}", t, g, k));
        next[keys[g].back()] = 0;
      }
    auto done = [&] {
      for (const auto& [key, n] : next)
        if (n < kPerKey) return false;
      return true;
    };
    while (!done() && !give_up) {
      std::vector<std::vector<Message>> batches(kGroups);
      for (int g = 0; g < kGroups; ++g)
        for (int s = 0; s < kPerKeyPerBatch; ++s)
          for (const auto& key : keys[g])
            if (next[key] + s < kPerKey)
              batches[g].push_back({message_id(key, next[key] + s), stream, key, payload, {}});
      std::vector<std::unique_ptr<txbox::brokers::PendingPublish>> pending;
      for (const auto& batch : batches) pending.push_back(publisher->start(batch));
      bool any_confirmed = false;
      for (int g = 0; g < kGroups; ++g) {
        auto results = pending[g]->wait(std::chrono::steady_clock::now() + 10s);
        std::map<std::string, bool> key_failed;
        bool confirmed = false, failed = false;
        for (size_t i = 0; i < results.size(); ++i) {
          const auto& key = *batches[g][i].key;
          if (results[i].confirmed) {
            confirmed = true;
            std::lock_guard lock(mutex);
            confirmed_ids.insert(batches[g][i].message_id);
            if (key_failed[key])
              violations.push_back(batches[g][i].message_id + " confirmed after an earlier one of its key failed");
            else
              ++next[key];
          } else {
            failed = true;
            key_failed[key] = true;
            if (results[i].error_class == ErrorClass::outage) ++outage_results;
            if (results[i].error_class == ErrorClass::permanent) {
              std::lock_guard lock(mutex);
              violations.push_back(batches[g][i].message_id + " failed permanently: " + results[i].error);
            }
          }
        }
        mixed_batches += confirmed && failed;
        any_confirmed = any_confirmed || confirmed;
        confirmed_total +=
            static_cast<long>(std::count_if(results.begin(), results.end(), [](const auto& r) { return r.confirmed; }));
      }
      if (!any_confirmed && !publisher->probe(1s)) {
        ++probes_false;
        std::this_thread::sleep_for(200ms);
      }
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  bool reached = false;
  for (auto until = std::chrono::steady_clock::now() + 120s; !reached && std::chrono::steady_clock::now() < until;)
    if (!(reached = confirmed_total >= kTotal / 3)) std::this_thread::sleep_for(5ms);
  if (reached) redis.kill();  // SIGKILL: only what was fsynced survives, and only that was acknowledged
  // Counted once the server is gone (the kill script takes a while on a
  // busy machine, and publishing goes on meanwhile).
  const long confirmed_at_kill = confirmed_total;
  std::this_thread::sleep_for(2s);
  const long confirmed_while_down = confirmed_total - confirmed_at_kill;
  if (reached) redis.start();  // reloads the AOF, same port
  const auto deadline = std::chrono::steady_clock::now() + 4min;
  while (confirmed_total < kTotal && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100ms);
  give_up = true;
  for (auto& t : threads) t.join();

  REQUIRE(reached);
  // The kill struck mid-run: batches were in flight before and after it.
  INFO(fmt::format(
      "confirmed at the kill {}, while down {}, outage results {}, failed probes {}, batches half "
      "confirmed {}",
      confirmed_at_kill, confirmed_while_down, outage_results.load(), probes_false.load(), mixed_batches.load()));
  CHECK(confirmed_at_kill > 0);
  CHECK(confirmed_at_kill < kTotal);
  CHECK(outage_results > 0);
  CHECK(probes_false > 0);
  // While the server is dead only replies already in the sockets can be
  // read: at most the batches in flight (kThreads * kGroups of them), twice
  // for slack.
  CHECK(confirmed_while_down <= 2 * kThreads * kGroups * kKeysPerGroup * kPerKeyPerBatch);
  WARN(fmt::format("batches with confirmed and failed messages (the kill between two replies): {}",
                   mixed_batches.load()));
  for (const auto& v : violations) FAIL_CHECK(v);
  CHECK(confirmed_total == kTotal);

  rt::Client client(redis.url());
  auto entries = client.xrange(stream);
  std::set<std::string> stored;
  std::map<std::string, std::vector<std::string>> first_occurrences;  // per key, message ids in stream order
  for (const auto& e : entries) {
    const auto& id = e.fields.at("message-id");
    if (stored.insert(id).second) first_occurrences[e.fields.at("message-key")].push_back(id);
  }
  for (const auto& id : confirmed_ids) {
    INFO(id);
    CHECK(stored.count(id) == 1);  // acknowledged = fsynced: survives the SIGKILL
  }
  // Per key, the first occurrences are the key's messages in publish order:
  // a later message present while an earlier one is absent fails here.
  CHECK(first_occurrences.size() == size_t{kThreads} * kGroups * kKeysPerGroup);
  for (const auto& [key, ids] : first_occurrences) {
    std::vector<std::string> expected;
    for (int s = 0; s < kPerKey; ++s) expected.push_back(message_id(key, s));
    INFO(key);
    CHECK(ids == expected);
  }
  // The script and its dedup key are one AOF record: no message twice.
  CHECK(entries.size() == stored.size());
}
