// The NATS publisher under a server crash, each test with a private
// nats-server (SIGKILL, then started again on the same port and directory):
//  - what cnats 3.4.1 does with a reconnect buffer of 0 (pinned: the header
//    comment says 0 means the default; the code refuses at once);
//  - publishing while the server is down: class outage at once, probe()
//    false, nothing of it stored after the restart;
//  - the server killed while start() is in the middle of sending one large
//    keyed batch: what is stored is a prefix of the batch (nothing sent
//    after the failure, nothing buffered and sent after the reconnect);
//  - keyed batches published continuously while the server is killed and
//    restarted twice: per key, the first occurrences in the stream are in
//    publish order, and every message reported confirmed is stored.
#include <catch2/catch.hpp>
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "../nats_support.hpp"
#include "support/test_env.hpp"

namespace test = txbox::test;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

template <typename Condition>
bool wait_for(Condition condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

struct ConnDeleter {
  void operator()(natsConnection* nc) const noexcept {
    natsConnection_Close(nc);
    natsConnection_Destroy(nc);
  }
};
using ConnPtr = std::unique_ptr<natsConnection, ConnDeleter>;

// A plain cnats connection that reconnects forever; `reconnect_buffer` as
// given to natsOptions_SetReconnectBufSize, or the library default.
ConnPtr raw_connection(const std::string& url, std::optional<int> reconnect_buffer) {
  natsOptions* opts = nullptr;
  REQUIRE(natsOptions_Create(&opts) == NATS_OK);
  REQUIRE(natsOptions_SetURL(opts, url.c_str()) == NATS_OK);
  REQUIRE(natsOptions_SetMaxReconnect(opts, -1) == NATS_OK);
  REQUIRE(natsOptions_SetReconnectWait(opts, 100) == NATS_OK);
  if (reconnect_buffer) REQUIRE(natsOptions_SetReconnectBufSize(opts, *reconnect_buffer) == NATS_OK);
  natsConnection* nc = nullptr;
  const natsStatus s = natsConnection_Connect(&nc, opts);
  natsOptions_Destroy(opts);
  REQUIRE(s == NATS_OK);
  return ConnPtr(nc);
}

std::unique_ptr<txbox::brokers::Publisher> publisher(const std::string& url) {
  return txbox::nats::make_publisher(test::nats_broker_url(url));
}

std::vector<Message> messages(const std::string& subject, int n, const std::string& tag) {
  std::vector<Message> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({test::unique_name("id"), subject, "key-" + std::to_string(i % 10), tag + "-" + std::to_string(i), {}});
  }
  return out;
}

}  // namespace

TEST_CASE("cnats 3.4.1: a reconnect buffer of 0 refuses a publish while reconnecting, the default buffers it",
          "[nats][fault]") {
  test::PrivateNats server;
  const auto subject = test::JetStreamAdmin(server.url()).add_subject_with_stream("rbuf");
  const auto stream = test::nats_stream_name(subject);
  auto unbuffered = raw_connection(server.url(), 0);
  auto buffered = raw_connection(server.url(), std::nullopt);

  server.kill();
  REQUIRE(wait_for([&] { return natsConnection_Status(unbuffered.get()) == NATS_CONN_STATUS_RECONNECTING &&
                                natsConnection_Status(buffered.get()) == NATS_CONN_STATUS_RECONNECTING; },
                   30s));
  // What the publisher relies on: refused at once, nothing kept for later.
  CHECK(natsConnection_PublishString(unbuffered.get(), subject.c_str(), "from-unbuffered") ==
        NATS_INSUFFICIENT_BUFFER);
  // The default (what the defect came from): accepted, kept, sent after the reconnect.
  CHECK(natsConnection_PublishString(buffered.get(), subject.c_str(), "from-buffered") == NATS_OK);

  server.start();
  REQUIRE(wait_for([&] { return natsConnection_Status(unbuffered.get()) == NATS_CONN_STATUS_CONNECTED &&
                                natsConnection_Status(buffered.get()) == NATS_CONN_STATUS_CONNECTED; },
                   30s));
  CHECK(natsConnection_FlushTimeout(buffered.get(), 5000) == NATS_OK);
  CHECK(natsConnection_FlushTimeout(unbuffered.get(), 5000) == NATS_OK);
  test::JetStreamAdmin admin(server.url());
  CHECK(wait_for([&] { return admin.message_count(stream) >= 1; }, 10s));
  std::this_thread::sleep_for(500ms);
  auto stored = admin.read_stream(stream, subject);
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].payload == "from-buffered");
}

TEST_CASE("nats publisher while the server is down: outage at once, probe() false, nothing stored later",
          "[nats][fault]") {
  test::PrivateNats server;
  const auto subject = test::JetStreamAdmin(server.url()).add_subject_with_stream("down");
  const auto stream = test::nats_stream_name(subject);
  auto pub = publisher(server.url());
  for (const auto& r : pub->publish(messages(subject, 10, "before"), 30s)) REQUIRE(r.confirmed);
  CHECK(pub->probe(5s));

  server.kill();
  REQUIRE(wait_for([&] { return !pub->healthy(); }, 30s));  // the fault struck

  auto down = messages(subject, 200, "down");
  auto started = Clock::now();
  auto results = pub->publish(down, 30s);
  CHECK(Clock::now() - started < 5s);  // not the 30 s deadline: nothing to wait for
  REQUIRE(results.size() == down.size());
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::outage);
    CHECK_THAT(r.error, Catch::Contains("will be retried"));
  }
  auto more = messages(subject, 50, "down-split");
  started = Clock::now();
  auto pending = pub->start(more);
  auto split_results = pending->wait(Clock::now() + 30s);
  CHECK(Clock::now() - started < 5s);
  for (const auto& r : split_results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::outage);
  }
  started = Clock::now();
  CHECK_FALSE(pub->probe(2s));
  CHECK(Clock::now() - started < 5s);

  server.start();
  REQUIRE(wait_for([&] { return pub->healthy(); }, 60s));
  CHECK(wait_for([&] { return pub->probe(2s); }, 60s));
  std::this_thread::sleep_for(1s);  // a reconnect buffer would have been flushed by now
  test::JetStreamAdmin admin(server.url());
  CHECK(admin.message_count(stream) == 10);
  for (const auto& m : admin.read_stream(stream, subject)) CHECK_THAT(m.payload, Catch::StartsWith("before-"));

  for (const auto& r : pub->publish(messages(subject, 10, "after"), 30s)) CHECK(r.confirmed);
  CHECK(admin.message_count(stream) == 20);
}

TEST_CASE("nats server killed while start() sends a keyed batch: the stream holds a prefix of it, the rest is not sent",
          "[nats][fault]") {
  constexpr int kBatch = 30000, kKeys = 10;
  test::PrivateNats server;
  auto pub = publisher(server.url());
  bool struck_mid_loop = false;
  auto kill_after = 5ms;
  for (int attempt = 0; attempt < 8 && !struck_mid_loop; ++attempt) {
    const auto subject = test::nats_subject("midbatch");
    const auto stream = test::nats_stream_name(subject);
    test::JetStreamAdmin(server.url()).add_stream(stream, {subject}, 30min);
    REQUIRE(wait_for([&] { return pub->probe(2s); }, 60s));
    std::vector<Message> batch;
    for (int i = 0; i < kBatch; ++i) {
      const std::string key = "k" + std::to_string(i % kKeys);
      batch.push_back({test::unique_name("id"), subject, key, key + ":" + std::to_string(i / kKeys) + std::string(200, '.'),
                       {}});
    }
    std::atomic<bool> sending{false};
    std::unique_ptr<txbox::brokers::PendingPublish> pending;
    Clock::duration send_time{};
    std::thread sender([&] {
      sending = true;
      const auto t0 = Clock::now();
      pending = pub->start(batch);
      send_time = Clock::now() - t0;
    });
    REQUIRE(wait_for([&] { return sending.load(); }, 10s));
    std::this_thread::sleep_for(kill_after);
    server.crash_now();
    sender.join();
    auto results = pending->wait(Clock::now() + 30s);
    pending.reset();
    REQUIRE(results.size() == batch.size());
    int confirmed = 0, not_sent = 0, other_classes = 0;
    size_t first_not_sent = batch.size();
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].confirmed) {
        ++confirmed;
        continue;
      }
      if (results[i].error_class != ErrorClass::outage) ++other_classes;
      if (results[i].error.find("not sent to") != std::string::npos) {
        ++not_sent;
        first_not_sent = std::min(first_not_sent, i);
      }
    }
    const int sent = kBatch - not_sent;
    WARN("attempt " << attempt << ": kill " << kill_after.count() << " ms after start(), which took "
                    << std::chrono::duration_cast<std::chrono::milliseconds>(send_time).count() << " ms; "
                    << confirmed << " confirmed, " << sent << " sent, " << not_sent << " not sent");
    CHECK(other_classes == 0);  // every failure is an outage
    // From the first message not sent on, nothing was sent.
    if (not_sent > 0) CHECK(static_cast<size_t>(not_sent) == batch.size() - first_not_sent);
    struck_mid_loop = not_sent > 0 && sent > 1;
    if (not_sent == 0) kill_after /= 2;             // the loop was done: kill earlier
    if (sent <= 1) kill_after = kill_after * 2 + 1ms;  // nothing sent yet: kill later

    server.start();
    REQUIRE(wait_for([&] { return pub->healthy(); }, 60s));
    REQUIRE(wait_for([&] { return pub->probe(2s); }, 60s));
    std::this_thread::sleep_for(1s);  // a reconnect buffer would have been flushed by now
    auto stored = test::JetStreamAdmin(server.url()).read_stream(stream, subject);
    // A prefix of the batch: a message stored after one that is missing
    // would be a later message of its key ahead of an earlier one.
    size_t prefix = 0;
    while (prefix < stored.size() && stored[prefix].message_id == batch[prefix].message_id) ++prefix;
    INFO("stored " << stored.size() << " messages; the first " << prefix << " are the batch's first");
    CHECK(prefix == stored.size());
    CHECK(stored.size() <= static_cast<size_t>(sent));
    CHECK(stored.size() >= static_cast<size_t>(confirmed));
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].confirmed) {
        CHECK(i < stored.size());  // confirmed = stored
      }
    }
  }
  INFO("the kill never landed inside start()'s send loop");
  REQUIRE(struck_mid_loop);
}

TEST_CASE("nats server killed twice under keyed batches: per key, first occurrences stay in publish order",
          "[nats][fault]") {
  // Publishers act like relay workers: each owns its keys, publishes the
  // oldest unconfirmed messages in order as one batch, drops the confirmed
  // ones and retries the rest (in order) after a short pause.
  constexpr int kWorkers = 4, kKeysPerWorker = 5, kPerWorker = 10000, kBatch = 500;  // the relay's default batch size
  constexpr int kTotal = kWorkers * kPerWorker;
  test::PrivateNats server;
  const auto subject = test::nats_subject("keyed");
  const auto stream = test::nats_stream_name(subject);
  // A duplicate window far beyond the test's length: re-publications are dropped.
  test::JetStreamAdmin(server.url()).add_stream(stream, {subject}, 30min);
  auto pub = publisher(server.url());

  struct Worker {
    std::vector<Message> messages;
    std::set<std::string> confirmed;
    std::map<ErrorClass, int> failures;
    std::string first_permanent;
  };
  std::vector<Worker> workers(kWorkers);
  std::map<std::string, std::pair<std::string, int>> key_and_index;  // id -> (key, index within key)
  for (int w = 0; w < kWorkers; ++w) {
    std::map<std::string, int> next_in_key;
    for (int i = 0; i < kPerWorker; ++i) {
      const std::string key = "w" + std::to_string(w) + "-k" + std::to_string(i % kKeysPerWorker);
      const int index = next_in_key[key]++;
      Message m{test::unique_name("id"), subject, key, key + ":" + std::to_string(index), {}};
      key_and_index[m.message_id] = {key, index};
      workers[static_cast<size_t>(w)].messages.push_back(std::move(m));
    }
  }

  std::atomic<int> confirmed_total{0};
  std::atomic<bool> give_up{false};
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&, self = &w] {
      Worker& worker = *self;
      std::deque<Message> queue(worker.messages.begin(), worker.messages.end());
      while (!queue.empty() && !give_up) {
        std::vector<Message> batch(queue.begin(), queue.begin() + std::min<size_t>(kBatch, queue.size()));
        auto results = pub->start(batch)->wait(Clock::now() + 5s);
        std::deque<Message> rest;
        bool failed = false;
        for (size_t i = 0; i < batch.size(); ++i) {
          if (results[i].confirmed) {
            worker.confirmed.insert(batch[i].message_id);
            ++confirmed_total;
          } else {
            failed = true;
            ++worker.failures[results[i].error_class];
            if (results[i].error_class == ErrorClass::permanent && worker.first_permanent.empty()) {
              worker.first_permanent = results[i].error;
            }
            rest.push_back(batch[i]);
          }
        }
        queue.erase(queue.begin(), queue.begin() + static_cast<std::ptrdiff_t>(batch.size()));
        queue.insert(queue.begin(), rest.begin(), rest.end());
        if (failed) std::this_thread::sleep_for(50ms);
      }
    });
  }

  std::vector<int> confirmed_at_kill;
  for (int cycle = 0; cycle < 2; ++cycle) {
    const int target = kTotal * (cycle == 0 ? 2 : 6) / 10;
    CHECK(wait_for([&] { return confirmed_total >= target; }, 240s));
    server.kill();
    confirmed_at_kill.push_back(confirmed_total);
    std::this_thread::sleep_for(1500ms);
    server.start();
  }
  const bool drained = wait_for([&] { return confirmed_total >= kTotal; }, 300s);
  give_up = true;
  for (auto& t : threads) t.join();
  REQUIRE(drained);

  // The faults struck mid-run: both kills while messages were still waiting,
  // and the publishers saw the outage.
  int outages = 0, permanents = 0;
  for (const auto& worker : workers) {
    outages += worker.failures.count(ErrorClass::outage) ? worker.failures.at(ErrorClass::outage) : 0;
    permanents += worker.failures.count(ErrorClass::permanent) ? worker.failures.at(ErrorClass::permanent) : 0;
    if (!worker.first_permanent.empty()) WARN("permanent failure: " << worker.first_permanent);
  }
  for (int at_kill : confirmed_at_kill) {
    CHECK(at_kill > 0);
    CHECK(at_kill < kTotal);
  }
  CHECK(outages > 0);
  CHECK(permanents == 0);
  WARN("confirmed at the kills: " << confirmed_at_kill[0] << ", " << confirmed_at_kill[1] << "; outage failures "
                                  << outages);

  auto stored = test::JetStreamAdmin(server.url()).read_stream(stream, subject);
  // Every message reported confirmed is in the stream.
  std::set<std::string> stored_ids;
  for (const auto& m : stored) stored_ids.insert(m.message_id);
  int confirmed_missing = 0;
  for (const auto& worker : workers)
    for (const auto& id : worker.confirmed) confirmed_missing += stored_ids.count(id) == 0 ? 1 : 0;
  CHECK(confirmed_missing == 0);
  // Per key, the first occurrences are 0, 1, 2, ... in stream order: a later
  // message stored while an earlier one is absent breaks this.
  std::map<std::string, int> next_expected;
  std::set<std::string> seen;
  int out_of_order = 0;
  std::string first_violation;
  for (const auto& m : stored) {
    if (!seen.insert(m.message_id).second) continue;  // a later copy
    auto it = key_and_index.find(m.message_id);
    REQUIRE(it != key_and_index.end());
    const auto& [key, index] = it->second;
    CHECK(m.key == key);
    int& expected = next_expected[key];
    if (index != expected) {
      ++out_of_order;
      if (first_violation.empty()) {
        first_violation = "key " + key + ": message " + std::to_string(index) + " first stored at sequence " +
                          std::to_string(m.sequence) + " while message " + std::to_string(expected) +
                          " was not stored yet";
      }
    }
    expected = std::max(expected, index + 1);
  }
  INFO(first_violation);
  CHECK(out_of_order == 0);
  CHECK(seen.size() == static_cast<size_t>(kTotal));
  // Re-publications within the duplicate window were dropped by Nats-Msg-Id.
  CHECK(stored.size() == static_cast<size_t>(kTotal));
}
