// The RabbitMQ adapter against private nodes (scripts/rabbitmq.sh) that the
// tests reconfigure, alarm and kill: a message over max_message_size closes
// the channel and only that message fails; a memory alarm blocks the
// connection and the batch fails as an outage within its deadline; a broker
// killed under keyed batches in flight loses no confirmed message and keeps
// per-key order.
#include <catch2/catch.hpp>
#include <deque>
#include <set>
#include <thread>

#include "rabbitmq_node.hpp"

namespace test = txbox::test;
namespace brokers = txbox::brokers;
namespace rabbitmq = txbox::rabbitmq;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string id_of(int i) { return fmt::format("00000000-0000-4000-8000-{:012d}", i); }
int number_of(const std::string& id) { return std::stoi(id.substr(24)); }

brokers::Message keyed(const std::string& destination, int i, int keys, std::size_t payload_size = 0) {
  brokers::Message m;
  m.message_id = id_of(i);
  m.destination = destination;
  m.key = "key-" + std::to_string(i % keys);
  m.payload = payload_size ? std::string(payload_size, 'p') : fmt::format("{{\"n\":{}}}", i);
  return m;
}

std::unique_ptr<brokers::Publisher> publisher(const std::string& url) {
  return rabbitmq::make_publisher(brokers::parse_broker_url(url));
}

std::vector<std::string> ids(const std::vector<brokers::Message>& messages) {
  std::vector<std::string> out;
  for (const auto& m : messages) out.push_back(m.message_id);
  return out;
}

auto key_by_number(int keys) {
  return [keys](const std::string& id) { return "key-" + std::to_string(number_of(id) % keys); };
}

}  // namespace

TEST_CASE("rabbitmq node: a message over max_message_size fails alone, the rest of its batch is stored in order",
          "[fault][rabbitmq]") {
  constexpr int kKeys = 10;
  test::PrivateRabbit rabbit;
  // Read by every channel the node opens from now on.
  rabbit.eval("application:set_env(rabbit, max_message_size, 1048576).");
  auto queue = test::unique_name("q");
  test::rabbit_consumer(rabbit.url(), queue)->close();  // durable queue
  auto pub = publisher(rabbit.url());

  // One 2 MiB message in the middle of 300: the broker closes the channel
  // when it reads it, with the messages before it unconfirmed and those
  // after it discarded.
  std::vector<brokers::Message> batch;
  for (int i = 0; i < 300; ++i) batch.push_back(keyed(queue, i, kKeys, i == 137 ? 2u << 20 : 0));
  auto started = Clock::now();
  auto results = pub->publish(batch, 120s);
  WARN("300 messages with one too large resolved in "
       << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count() << " ms");
  REQUIRE(results.size() == batch.size());
  std::vector<brokers::Message> stored;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    INFO(i << ": " << results[i].error);
    if (i == 137) {
      CHECK_FALSE(results[i].confirmed);
      CHECK(results[i].error_class == brokers::ErrorClass::permanent);
      // The broker's own words: the fault struck (the channel was closed for it).
      CHECK_THAT(results[i].error, Catch::Contains("larger than configured max size") &&
                                       Catch::Contains("PRECONDITION_FAILED 406") &&
                                       Catch::Contains("fix the message or the broker limits"));
    } else {
      CHECK(results[i].confirmed);
      stored.push_back(batch[i]);
    }
  }

  // Two too large (first and last) among 60: both found, the rest confirmed,
  // on the same publisher (its connection survived the isolation).
  std::vector<brokers::Message> second;
  for (int i = 1000; i < 1060; ++i) second.push_back(keyed(queue, i, kKeys, (i == 1000 || i == 1059) ? 2u << 20 : 0));
  auto second_results = pub->publish(second, 120s);
  REQUIRE(second_results.size() == second.size());
  for (std::size_t i = 0; i < second.size(); ++i) {
    INFO(second[i].message_id << ": " << second_results[i].error);
    bool too_large = i == 0 || i + 1 == second.size();
    CHECK(second_results[i].confirmed == !too_large);
    if (too_large) CHECK(second_results[i].error_class == brokers::ErrorClass::permanent);
    if (!too_large) stored.push_back(second[i]);
  }
  CHECK(pub->healthy());

  auto delivered = test::drain_queue(rabbit.url(), queue);
  INFO(delivered.size() << " delivered for " << stored.size() << " confirmed");
  test::check_first_occurrences(delivered, ids(stored), key_by_number(kKeys));
}

TEST_CASE("rabbitmq node: a memory alarm fails a batch as an outage within its deadline, after it clears the same "
          "messages go through",
          "[fault][rabbitmq]") {
  constexpr int kKeys = 5;
  test::PrivateRabbit rabbit;
  auto queue = test::unique_name("q");
  auto big_queue = test::unique_name("big");
  test::rabbit_consumer(rabbit.url(), queue)->close();
  test::rabbit_consumer(rabbit.url(), big_queue)->close();
  auto pub = publisher(rabbit.url());
  // Stalled sends give up after 3 s (TCP_USER_TIMEOUT).
  auto stall_pub = publisher(rabbit.url("?send_timeout_ms=3000"));

  std::vector<brokers::Message> before;
  for (int i = 0; i < 20; ++i) before.push_back(keyed(queue, i, kKeys));
  for (const auto& r : pub->publish(before, 30s)) CHECK(r.confirmed);
  CHECK(pub->probe(5s));

  rabbit.eval("rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []}).");
  std::vector<brokers::Message> during;
  for (int i = 100; i < 150; ++i) during.push_back(keyed(queue, i, kKeys));
  auto started = Clock::now();
  auto results = pub->publish(during, 20s);
  auto elapsed = Clock::now() - started;
  WARN("the blocked batch failed after " << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                                         << " ms");
  CHECK(elapsed < 25s);  // its deadline, with slack for a loaded machine
  REQUIRE(results.size() == during.size());
  for (const auto& r : results) {
    INFO(r.error);
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == brokers::ErrorClass::outage);
    // The broker said so: connection.blocked arrived (the fault struck).
    CHECK_THAT(r.error, Catch::Contains("blocked the connection") && Catch::Contains("memory or disk alarm"));
  }
  CHECK_FALSE(pub->healthy());
  started = Clock::now();
  CHECK_FALSE(pub->probe(3s));
  CHECK(Clock::now() - started < 6s);
  CHECK_FALSE(pub->healthy());
  // Probing on: the blocked broker does not read, so it would hold every
  // connection a probe opened until the alarm clears. The probes reuse one.
  auto publisher_connections = [&] {
    auto r = rabbit.ctl({"list_connections", "client_properties"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::size_t n = 0;
    for (std::size_t p = r.output.find("txbox publisher"); p != std::string::npos;
         p = r.output.find("txbox publisher", p + 1)) {
      ++n;
    }
    return n;
  };
  const auto connections = publisher_connections();
  for (int i = 0; i < 3; ++i) {
    started = Clock::now();
    CHECK_FALSE(pub->probe(3s));
    CHECK(Clock::now() - started < 2s);  // no round trip: the parked connection is still blocked
  }
  CHECK(publisher_connections() == connections);

  // A message larger than the socket buffers: the blocked broker stops
  // reading in the middle of it, the send stalls and the kernel drops the
  // connection after send_timeout_ms.
  started = Clock::now();
  auto stalled = stall_pub->publish(std::vector<brokers::Message>{keyed(big_queue, 900, kKeys, 32u << 20)}, 60s);
  elapsed = Clock::now() - started;
  WARN("the stalled send failed after " << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                                        << " ms");
  REQUIRE(stalled.size() == 1);
  INFO(stalled[0].error);
  CHECK_FALSE(stalled[0].confirmed);
  CHECK(stalled[0].error_class == brokers::ErrorClass::outage);
  CHECK(elapsed < 30s);

  rabbit.eval("rabbit_alarm:clear_alarm({resource_limit, memory, node()}).");
  auto deadline = Clock::now() + 60s;
  bool back = false;
  while (!back && Clock::now() < deadline) {
    back = pub->probe(2s);
    if (!back) std::this_thread::sleep_for(200ms);
  }
  REQUIRE(back);
  CHECK(pub->healthy());
  results = pub->publish(during, 30s);
  for (const auto& r : results) {
    INFO(r.error);
    CHECK(r.confirmed);
  }

  // What the blocked connection had sent may have been stored after the
  // alarm cleared: duplicates, never out of order.
  std::vector<std::string> expected = ids(before);
  for (const auto& id : ids(during)) expected.push_back(id);
  auto delivered = test::drain_queue(rabbit.url(), queue);
  INFO(delivered.size() << " delivered for " << expected.size() << " confirmed");
  test::check_first_occurrences(delivered, expected, key_by_number(kKeys));
}

TEST_CASE("rabbitmq node: broker killed under keyed batches in flight: no confirmed message lost, per-key order kept",
          "[fault][rabbitmq]") {
  constexpr int kMessages = 6000, kKeys = 24, kBatch = 200;
  test::PrivateRabbit rabbit;
  auto queue = test::unique_name("orders");
  test::rabbit_consumer(rabbit.url(), queue)->close();  // durable queue
  rabbit.sync_definitions();
  auto pub = publisher(rabbit.url());

  // A miniature relay: two lanes (disjoint keys), one batch in flight per
  // lane, both in flight at once. Per key, a message leaves its lane only
  // when it and every earlier message of its key in the batch were
  // confirmed; a confirmed message after a failed one of its key is sent
  // again (as the relay holds it back).
  std::vector<brokers::Message> all;
  std::deque<int> lanes[2];
  for (int i = 0; i < kMessages; ++i) {
    all.push_back(keyed(queue, i, kKeys));
    lanes[(i % kKeys) % 2].push_back(i);
  }
  std::set<int> confirmed;
  // Two kills: at a third, with the node frozen right after start() (the
  // kill certainly strikes unconfirmed messages on the wire); at two thirds,
  // wherever it lands (messages may be stored but unconfirmed: duplicates).
  struct Kill {
    std::size_t at;
    bool freeze;
    std::size_t confirmed_before = 0, failed_in_flight = 0;
    bool done = false, restarted = false;
    Clock::time_point when{};
  };
  Kill kills[2] = {{kMessages / 3, true}, {kMessages * 2 / 3, false}};
  std::size_t outage_results = 0;
  const auto give_up = Clock::now() + 8min;
  while ((!lanes[0].empty() || !lanes[1].empty()) && Clock::now() < give_up) {
    std::vector<brokers::Message> batches[2];
    for (int lane = 0; lane < 2; ++lane) {
      for (std::size_t n = 0; n < lanes[lane].size() && n < static_cast<std::size_t>(kBatch); ++n) {
        batches[lane].push_back(all[lanes[lane][n]]);
      }
    }
    std::unique_ptr<brokers::PendingPublish> pending[2];
    for (int lane = 0; lane < 2; ++lane) pending[lane] = pub->start(batches[lane]);
    Kill* kill_now = nullptr;
    for (auto& k : kills) {
      bool previous_done = &k == &kills[0] || kills[0].restarted;
      if (!k.done && previous_done && confirmed.size() >= k.at) kill_now = &k;
    }
    if (kill_now) {  // both batches are on the wire, their confirms unread
      if (kill_now->freeze) rabbit.freeze();  // nothing more is confirmed from here on
      rabbit.kill();
      kill_now->done = true;
      kill_now->when = Clock::now();
      kill_now->confirmed_before = confirmed.size();
    }
    auto deadline = Clock::now() + 15s;
    std::size_t confirmed_this_round = 0;
    for (int lane = 0; lane < 2; ++lane) {
      auto results = pending[lane]->wait(deadline);
      REQUIRE(results.size() == batches[lane].size());
      std::set<std::string> failed_keys;
      std::deque<int> rest;
      for (std::size_t n = 0; n < results.size(); ++n) {
        const auto& m = batches[lane][n];
        int i = number_of(m.message_id);
        INFO(m.message_id << ": " << results[n].error);
        REQUIRE(results[n].error_class != brokers::ErrorClass::permanent);
        if (!results[n].confirmed) {
          if (results[n].error_class == brokers::ErrorClass::outage) ++outage_results;
          if (kill_now) ++kill_now->failed_in_flight;
        }
        if (results[n].confirmed && !failed_keys.contains(*m.key)) {
          confirmed.insert(i);
          ++confirmed_this_round;
        } else {
          failed_keys.insert(*m.key);
          rest.push_back(i);
        }
      }
      for (std::size_t n = results.size(); n < lanes[lane].size(); ++n) rest.push_back(lanes[lane][n]);
      lanes[lane].swap(rest);
    }
    for (auto& k : kills) {
      if (k.done && !k.restarted && Clock::now() - k.when > 3s) {
        rabbit.start();  // same data directory: the durable queue comes back
        k.restarted = true;
      }
    }
    if (confirmed_this_round == 0) {  // as the relay: wait for the broker to come back
      if (!pub->probe(1s)) std::this_thread::sleep_for(200ms);
    }
  }
  INFO(confirmed.size() << " confirmed; kill 1 after " << kills[0].confirmed_before << " struck "
                        << kills[0].failed_in_flight << " in flight; kill 2 after " << kills[1].confirmed_before
                        << " struck " << kills[1].failed_in_flight << "; " << outage_results << " outage results");
  for (const auto& k : kills) {
    REQUIRE(k.done);
    REQUIRE(k.restarted);
    CHECK(k.confirmed_before > 0);
    CHECK(k.confirmed_before < static_cast<std::size_t>(kMessages));
  }
  CHECK(kills[0].failed_in_flight > 0);  // the frozen kill struck batches in flight
  CHECK(outage_results > 0);
  CHECK(lanes[0].empty());
  CHECK(lanes[1].empty());
  CHECK(confirmed.size() == static_cast<std::size_t>(kMessages));

  auto delivered = test::drain_queue(rabbit.url(), queue, 5s, 300s);
  WARN(delivered.size() << " delivered for " << kMessages << " messages");
  test::check_first_occurrences(delivered, ids(all), key_by_number(kKeys));
}

TEST_CASE("rabbitmq node: pooled connections that died while idle cost no batch and no probe", "[fault][rabbitmq]") {
  constexpr int kKeys = 3;
  test::PrivateRabbit rabbit;
  auto queue = test::unique_name("q");
  test::rabbit_consumer(rabbit.url(), queue)->close();
  rabbit.sync_definitions();
  auto pub = publisher(rabbit.url());
  std::vector<brokers::Message> sent;
  auto publish_ok = [&](int first) {
    std::vector<brokers::Message> batch;
    for (int i = first; i < first + 30; ++i) batch.push_back(keyed(queue, i, kKeys));
    // Two batches in flight: two pooled connections afterwards.
    auto a = pub->start(std::span(batch).first(15));
    auto b = pub->start(std::span(batch).subspan(15));
    auto deadline = Clock::now() + 30s;
    auto ra = a->wait(deadline), rb = b->wait(deadline);
    ra.insert(ra.end(), rb.begin(), rb.end());
    for (const auto& r : ra) {
      INFO(r.error);
      CHECK(r.confirmed);
    }
    sent.insert(sent.end(), batch.begin(), batch.end());
  };
  publish_ok(0);

  // The broker closes every connection (connection.close 320) while the publisher is idle.
  auto closed = rabbit.ctl({"close_all_connections", "txbox test: closing idle connections"});
  INFO(closed.output);
  REQUIRE(closed.exit_code == 0);
  std::this_thread::sleep_for(500ms);
  publish_ok(100);

  // The broker is killed and restarted while the publisher is idle.
  rabbit.kill();
  rabbit.start();
  CHECK(pub->probe(10s));  // the dead pooled connection is replaced within the probe
  publish_ok(200);
  CHECK(pub->healthy());

  auto delivered = test::drain_queue(rabbit.url(), queue);
  test::check_first_occurrences(delivered, ids(sent), key_by_number(kKeys));
}
