// End to end with the relay binary on Redis Streams: fields of a plain-SQL
// outbox row, per-key order with 3 relays x 4 workers, the inbox consumer
// under redelivery.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "redis_support.hpp"

namespace test = txbox::test;
namespace rt = txbox::test::redis;
using namespace std::chrono_literals;

TEST_CASE("relay: a plain-SQL outbox row arrives on the stream with its fields", "[redis]") {
  auto url = test::create_database("redisrelay");
  auto stream = test::unique_name("orders");
  auto message_id = test::insert_sql_order_row(url, stream);
  auto r = test::run(test::relay_drain_command(url, test::redis_url()), 60s);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  rt::Client client(test::redis_url());
  auto entries = client.xrange(stream);
  REQUIRE(entries.size() == 1);
  auto& f = entries[0].fields;
  CHECK(f.at("message-id") == message_id);
  CHECK(f.at("message-key") == "order-42");
  CHECK(f.at("payload") == R"({"id":42})");
  CHECK(nlohmann::json::parse(f.at("headers")) == nlohmann::json{{"content-type", "application/json"}});
  CHECK(test::outbox_rows(url) == 0);
}

TEST_CASE("relay: 3 relays x 4 workers, 20,000 messages over 200 keys keep per-key order in the stream", "[redis]") {
  constexpr int kMessages = 20000, kKeys = 200;
  auto url = test::create_database("redisorder");
  auto stream = test::unique_name("orders");
  test::fill_outbox(url, stream, kMessages, kKeys);
  auto start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<test::Process>> relays;
  for (int i = 0; i < 3; ++i)
    relays.push_back(std::make_unique<test::Process>(
        test::relay_drain_command(url, test::redis_url(), {"--workers", "4", "--batch-size", "200"}),
        fmt::format("/tmp/{}-{}.log", stream, i)));
  for (auto& relay : relays) REQUIRE(relay->wait(4min) == std::optional<int>(0));
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN(fmt::format("3 relays drained {} messages to Redis in {:.1f} s ({:.0f} msg/s)", kMessages, elapsed,
                   kMessages / elapsed));
  CHECK(test::outbox_rows(url) == 0);
  rt::Client client(test::redis_url());
  auto entries = client.xrange(stream);
  REQUIRE(entries.size() == kMessages);
  std::map<std::string, int> last;
  std::set<std::string> ids;
  int out_of_order = 0;
  for (const auto& e : entries) {
    ids.insert(e.fields.at("message-id"));
    const auto& payload = e.fields.at("payload");
    auto colon = payload.find(':');
    REQUIRE(payload.substr(0, colon) == e.fields.at("message-key"));
    int seq = std::stoi(payload.substr(colon + 1));
    auto it = last.find(e.fields.at("message-key"));
    if (it != last.end() && seq != it->second + 1) ++out_of_order;
    last[e.fields.at("message-key")] = seq;
  }
  CHECK(out_of_order == 0);
  CHECK(ids.size() == static_cast<size_t>(kMessages));
  CHECK(last.size() == static_cast<size_t>(kKeys));
}

namespace {
// Delivers like the real consumer but loses every ack (a crash between the
// inbox commit and the XACK, for every message).
class LosesAcks : public txbox::brokers::Consumer {
 public:
  explicit LosesAcks(txbox::brokers::Consumer& inner) : inner_(inner) {}
  std::optional<txbox::brokers::Delivery> poll(std::chrono::milliseconds timeout) override {
    return inner_.poll(timeout);
  }
  void ack(const txbox::brokers::Delivery&) override {}
  void close() override { inner_.close(); }

 private:
  txbox::brokers::Consumer& inner_;
};
}  // namespace

TEST_CASE("relay + inbox consumer: every message processed once although all are delivered twice", "[redis]") {
  constexpr int kMessages = 500, kKeys = 20;
  auto url = test::create_database("redisinbox");
  auto stream = test::unique_name("orders");
  test::fill_outbox(url, stream, kMessages, kKeys);
  REQUIRE(test::run(test::relay_drain_command(url, test::redis_url(), {"--workers", "2"}), 120s).exit_code == 0);
  test::create_effects_table(url);
  auto group = test::unique_name("g");

  auto options = rt::consumer_options(stream, group, "first");
  options.claim_idle = 500ms;
  auto first = rt::consumer(test::redis_url(), options);
  LosesAcks losing(*first);
  txbox::consumer::InboxConsumer a(losing, test::fast_commit(url), txbox::inbox::Inbox(group), test::record_effect);
  a.run({}, [&](const auto& s) { return s.processed >= static_cast<uint64_t>(kMessages); });
  first->close();
  rt::Client client(test::redis_url());
  CHECK(client.pending(stream, group) == kMessages);

  // A second consumer takes everything over (XAUTOCLAIM): all duplicates.
  options.consumer_name = "second";
  auto second = rt::consumer(test::redis_url(), options);
  std::vector<int> attempts;
  txbox::consumer::InboxConsumer b(*second, test::fast_commit(url), txbox::inbox::Inbox(group),
                                   [](pqxx::transaction_base&, const txbox::brokers::Delivery&) {
                                     FAIL("the handler must not run for a redelivered message");
                                   });
  auto deadline = std::chrono::steady_clock::now() + 60s;
  b.run({}, [&](const auto& s) {
    return s.duplicates >= static_cast<uint64_t>(kMessages) || std::chrono::steady_clock::now() > deadline;
  });
  CHECK(b.stats().duplicates == kMessages);
  CHECK(b.stats().processed == 0);
  CHECK(client.pending(stream, group) == 0);
  test::check_effects(url, kMessages);
}
