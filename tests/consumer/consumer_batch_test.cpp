// Batched inbox transactions against the real PostgreSQL, with an in-memory
// broker consumer (a fake: what is tested here is the consumer library's
// batching, not a broker): duplicates found with one statement, a throwing
// handler rolling back only its own message, a poison message dead-lettered,
// a key's effects in order, and every ack only after the commit.
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <pqxx/pqxx>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/core/pg_array.hpp"

namespace test = txbox::test;
using txbox::brokers::Delivery;
using txbox::consumer::InboxConsumer;

namespace {

// Serves the given deliveries; on every ack checks, on its own connection,
// that the message's inbox row is committed (ack only after the commit).
struct FakeBroker : txbox::brokers::Consumer {
  std::string url;
  std::deque<Delivery> ready;
  std::vector<int64_t> acked;               // offsets, in ack order
  std::vector<std::vector<int64_t>> bulks;  // one entry per ack_batch call
  std::vector<std::pair<int32_t, int64_t>> positions;  // (partition, offset), in ack order
  std::vector<int64_t> dead;
  int acked_before_commit = 0;
  std::unique_ptr<pqxx::connection> checker;

  explicit FakeBroker(std::string database_url) : url(std::move(database_url)) {}
  std::optional<Delivery> poll(std::chrono::milliseconds) override {
    if (ready.empty()) return std::nullopt;
    auto d = ready.front();
    ready.pop_front();
    return d;
  }
  void ack(const Delivery& d) override { check_and_record(std::span(&d, 1)); }
  void ack_batch(std::span<const Delivery> deliveries) override {
    bulks.emplace_back();
    for (const auto& d : deliveries) bulks.back().push_back(d.offset);
    check_and_record(deliveries);
  }
  // Counts the deliveries whose inbox row is not committed yet.
  void check_and_record(std::span<const Delivery> deliveries) {
    if (!checker) checker = std::make_unique<pqxx::connection>(url);
    std::vector<std::string> ids;
    for (const auto& d : deliveries) ids.push_back(d.message.message_id);
    pqxx::nontransaction tx(*checker);
    const auto committed =
        tx.exec_params1("SELECT count(*) FROM txbox.inbox WHERE message_id = ANY($1::text[])", txbox::pg_array(ids))[0]
            .as<long>();
    acked_before_commit += static_cast<int>(static_cast<long>(deliveries.size()) - committed);
    for (const auto& d : deliveries) {
      acked.push_back(d.offset);
      positions.emplace_back(d.partition, d.offset);
    }
  }
  bool dead_letter(const Delivery& d, const std::string&) override {
    dead.push_back(d.offset);
    return true;
  }
  void close() override {}
};

Delivery delivery(int64_t offset, const std::string& id, const std::string& key) {
  Delivery d;
  d.message = {id, "orders", key, "payload-" + id, {}};
  d.source = "orders";
  d.offset = offset;
  return d;
}

// With `partitioned`, the inbox is the time-partitioned one (docs/inbox.md).
std::string prepared_database(bool partitioned = false) {
  auto url = test::create_database("batch");
  if (partitioned) {
    auto r = test::run({test::binary_path("txbox"), "inbox", "partition", "--database-url", url});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  pqxx::connection conn(url);
  pqxx::nontransaction(conn).exec0("CREATE TABLE effects (seq bigserial, message_id text)");
  return url;
}

std::vector<std::string> effects(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  std::vector<std::string> out;
  for (const auto& row : tx.exec("SELECT message_id FROM effects ORDER BY seq")) out.push_back(row[0].c_str());
  return out;
}

}  // namespace

TEST_CASE("a batch with a duplicate, a throwing handler and a poison message: the others commit once, in key "
          "order, acks only after the commit",
          "[consumer][batch]") {
  const bool partitioned = GENERATE(false, true);
  INFO((partitioned ? "partitioned inbox" : "plain inbox"));
  const auto url = prepared_database(partitioned);
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO txbox.inbox (consumer, message_id) VALUES ('billing', 'dup')");
    tx.commit();
  }
  FakeBroker broker(url);
  // Offsets 0..6 of one partition. m2 fails twice, then succeeds; m3 has
  // m2's key, so it must wait for it; poison always fails.
  broker.ready = {delivery(0, "m0", "k0"), delivery(1, "dup", "k1"), delivery(2, "m2", "k2"),
                  delivery(3, "m3", "k2"), delivery(4, "m4", "k4"), delivery(5, "poison", "k5"),
                  delivery(6, "m6", "k6")};
  std::map<std::string, int> calls;
  txbox::consumer::InboxConsumerOptions options;
  options.max_attempts = 3;
  options.retry_base = std::chrono::milliseconds(1);
  options.retry_cap = std::chrono::milliseconds(5);
  InboxConsumer consumer(
      broker, url, txbox::inbox::Inbox("billing"),
      [&](pqxx::transaction_base& tx, const Delivery& d) {
        tx.exec_params0("INSERT INTO effects (message_id) VALUES ($1)", d.message.message_id);
        const int n = ++calls[d.message.message_id];
        if (d.message.message_id == "poison") throw std::runtime_error("cannot parse");
        if (d.message.message_id == "m2" && n <= 3) throw std::runtime_error("downstream busy");
      },
      options);
  auto stats = consumer.run({}, [&](const auto& s) { return s.processed + s.dead_lettered + s.duplicates >= 7; });

  CHECK(stats.processed == 5);
  CHECK(stats.duplicates == 1);
  CHECK(stats.dead_lettered == 1);
  CHECK(broker.dead == std::vector<int64_t>{5});
  // m2's third run (its first alone after the batch's two: the optimistic
  // run and the savepointed one) still fails, the fourth succeeds.
  CHECK(calls["m2"] == 4);
  CHECK(calls["dup"] == 0);
  // Each effect once, none of the poison; the key k2 in order.
  auto done = effects(url);
  CHECK(done == std::vector<std::string>{"m0", "m4", "m6", "m2", "m3"});
  // Acks: only after the commit; the first batch acked offsets 0 and 1 in
  // one call (m2 is pending, so the partition's later acks wait for it);
  // every message acked or dead-lettered once.
  CHECK(broker.acked_before_commit == 0);
  REQUIRE_FALSE(broker.bulks.empty());
  CHECK(broker.bulks.front() == std::vector<int64_t>{0, 1});
  auto all = broker.acked;
  all.insert(all.end(), broker.dead.begin(), broker.dead.end());
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
}

TEST_CASE("a batch handler gets the new deliveries in one call; when it throws, one message at a time finds the "
          "failing one",
          "[consumer][batch]") {
  const auto url = prepared_database();
  FakeBroker broker(url);
  for (int i = 0; i < 50; ++i)
    broker.ready.push_back(delivery(i, "b" + std::to_string(i), "key-" + std::to_string(i % 5)));
  broker.ready[17].message.payload = "bad";
  std::vector<size_t> call_sizes;
  txbox::consumer::InboxConsumerOptions options;
  options.max_attempts = 2;
  options.retry_base = std::chrono::milliseconds(1);
  options.max_batch = 20;
  InboxConsumer consumer(
      broker, url, txbox::inbox::Inbox("billing"),
      txbox::consumer::BatchHandler([&](pqxx::transaction_base& tx, std::span<const Delivery> deliveries) {
        call_sizes.push_back(deliveries.size());
        for (const auto& d : deliveries) {
          if (d.message.payload == "bad") throw std::runtime_error("bad payload");
          tx.exec_params0("INSERT INTO effects (message_id) VALUES ($1)", d.message.message_id);
        }
      }),
      options);
  auto stats = consumer.run({}, [&](const auto& s) { return s.processed + s.dead_lettered >= 50; });
  CHECK(stats.processed == 49);
  CHECK(stats.dead_lettered == 1);
  CHECK(broker.dead == std::vector<int64_t>{17});
  // The first batch (0..19, with the bad one) failed as a whole, then ran as
  // 20 batches of one; b17 was tried once more alone, then dead-lettered;
  // then whole batches of 20 and 10.
  const std::vector<size_t> expected_sizes = [] {
    std::vector<size_t> sizes{20};
    sizes.insert(sizes.end(), 21, 1);
    sizes.insert(sizes.end(), {20, 10});
    return sizes;
  }();
  CHECK(call_sizes == expected_sizes);
  auto done = effects(url);
  CHECK(done.size() == 49);
  CHECK(std::set<std::string>(done.begin(), done.end()).size() == 49);
  // Key order: within each key, effects in offset order.
  std::map<std::string, int> last;
  bool ordered = true;
  for (const auto& id : done) {
    const int n = std::stoi(id.substr(1));
    const std::string key = "key-" + std::to_string(n % 5);
    if (last.contains(key) && last[key] > n) ordered = false;
    last[key] = n;
  }
  CHECK(ordered);
  CHECK(broker.acked_before_commit == 0);
}

TEST_CASE("four lanes: each key's effects in broker order, every message once, acks in offset order per "
          "partition and only after the commit, a failing message holding back its partition's acks",
          "[consumer][batch][lanes]") {
  constexpr int kMessages = 3000, kKeys = 60, kPartitions = 3;
  const auto url = prepared_database();
  {
    pqxx::connection conn(url);
    pqxx::nontransaction(conn).exec0("ALTER TABLE effects ADD COLUMN message_key text, ADD COLUMN backend int DEFAULT pg_backend_pid()");
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO txbox.inbox (consumer, message_id) VALUES ('billing', 'm100'), ('billing', 'm2000')");
    tx.commit();
  }
  FakeBroker broker(url);
  // Keys stay on their partition, as Kafka's partitioner keeps them; offsets
  // count per partition.
  std::map<int32_t, int64_t> next_offset;
  for (int i = 0; i < kMessages; ++i) {
    const int key = (i * 7) % kKeys;
    auto d = delivery(0, "m" + std::to_string(i), "key-" + std::to_string(key));
    d.partition = key % kPartitions;
    d.offset = next_offset[d.partition]++;
    broker.ready.push_back(d);
  }
  std::mutex calls_mutex;
  std::map<std::string, int> calls;
  txbox::consumer::InboxConsumerOptions options;
  options.workers = 4;
  options.max_batch = 50;
  options.max_attempts = 3;
  options.retry_base = std::chrono::milliseconds(20);
  InboxConsumer consumer(
      broker, url, txbox::inbox::Inbox("billing"),
      [&](pqxx::transaction_base& tx, const Delivery& d) {
        tx.exec_params0("INSERT INTO effects (message_id, message_key) VALUES ($1, $2)", d.message.message_id,
                        *d.message.key);
        int n;
        {
          std::lock_guard lock(calls_mutex);
          n = ++calls[d.message.message_id];
        }
        // m500 fails twice before it succeeds (its batch and its savepoint
        // run, then its first run alone succeeds): its key's later messages
        // and its partition's acks wait for it.
        if (d.message.message_id == "m500" && n <= 2) throw std::runtime_error("downstream busy");
      },
      options);
  auto stats = consumer.run({}, [&](const auto&) { return broker.acked.size() >= kMessages; });

  CHECK(stats.processed == kMessages - 2);
  CHECK(stats.duplicates == 2);
  CHECK(stats.dead_lettered == 0);
  CHECK(broker.acked_before_commit == 0);
  // Every message acked once; per partition in offset order.
  std::map<int32_t, int64_t> last;
  std::set<std::pair<int32_t, int64_t>> seen;
  bool in_order = true;
  for (const auto& [partition, offset] : broker.positions) {
    if (last.contains(partition) && last[partition] >= offset) in_order = false;
    last[partition] = offset;
    seen.insert({partition, offset});
  }
  CHECK(in_order);
  CHECK(seen.size() == static_cast<size_t>(kMessages));
  // Effects: once each, each key's in the order the broker delivered them.
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  CHECK(tx.exec1("SELECT count(*), count(DISTINCT message_id) FROM effects")[0].as<long>() == kMessages - 2);
  std::map<std::string, int> last_of_key;
  bool keys_ordered = true;
  for (const auto& row : tx.exec("SELECT message_id, message_key FROM effects ORDER BY seq")) {
    const int n = std::stoi(row[0].as<std::string>().substr(1));
    const std::string key = row[1].as<std::string>();
    if (last_of_key.contains(key) && last_of_key[key] > n) keys_ordered = false;
    last_of_key[key] = n;
  }
  CHECK(keys_ordered);
  CHECK(calls["m500"] == 3);
  // What a run leaves in its lanes is only delivered again by a new broker
  // consumer: a second run is refused.
  CHECK_THROWS_AS(consumer.run({}), txbox::UsageError);
  // Four lanes, four connections of their own.
  CHECK(tx.exec1("SELECT count(DISTINCT backend) FROM effects")[0].as<long>() == 4);
}
