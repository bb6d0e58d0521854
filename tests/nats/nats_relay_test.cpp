// End to end on NATS JetStream: outbox rows -> txbox-relay (the binary) ->
// JetStream -> the adapter's durable pull consumer, and the inbox consumer
// over it under redelivery.
#include <catch2/catch.hpp>
#include <map>
#include <pqxx/pqxx>
#include <set>

#include "../fault/fault_support.hpp"
#include "nats_support.hpp"
#include "support/process.hpp"
#include "txbox/consumer/inbox_consumer.hpp"

namespace test = txbox::test;
using txbox::brokers::Delivery;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<txbox::brokers::Consumer> consumer(const std::string& subject, int batch = 500,
                                                   std::chrono::milliseconds ack_wait = 30s) {
  txbox::nats::ConsumerOptions options;
  options.subject = subject;
  options.durable = test::unique_name("durable");
  options.batch = batch;
  options.ack_wait = ack_wait;
  return txbox::nats::make_consumer(test::nats_broker_url(test::nats_url()), options);
}

// Everything on `subject`, in stream order, acked.
std::vector<Delivery> read_all(const std::string& subject, size_t expected, std::chrono::seconds timeout = 120s) {
  auto c = consumer(subject, 1000);
  std::vector<Delivery> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < expected && std::chrono::steady_clock::now() < deadline) {
    if (auto d = c->poll(500ms)) {
      c->ack(*d);
      out.push_back(std::move(*d));
    }
  }
  while (auto d = c->poll(500ms)) {  // anything beyond `expected`
    c->ack(*d);
    out.push_back(std::move(*d));
  }
  c->close();
  return out;
}

// Consumer decorator that loses every `every`-th ack (as if the process died
// between the inbox commit and the ack): the message comes back after AckWait.
struct LoseSomeAcks : txbox::brokers::Consumer {
  txbox::brokers::Consumer& inner;
  int every;
  int acks = 0;
  int lost = 0;
  LoseSomeAcks(txbox::brokers::Consumer& c, int n) : inner(c), every(n) {}
  std::optional<Delivery> poll(std::chrono::milliseconds t) override { return inner.poll(t); }
  void ack(const Delivery& d) override {
    if (d.delivery_attempt == 1 && ++acks % every == 0) {
      ++lost;
      return;
    }
    inner.ack(d);
  }
  bool dead_letter(const Delivery& d, const std::string& reason) override { return inner.dead_letter(d, reason); }
  void close() override { inner.close(); }
};

}  // namespace

TEST_CASE("nats: a plain-SQL insert is delivered with subject, key, payload, headers and message id", "[nats][relay]") {
  auto url = test::create_database("natsrelay");
  const auto subject = test::nats_subject("orders");
  auto message_id = test::insert_sql_order_row(url, subject);
  test::Process relay(test::relay_drain_command(url, test::nats_url() + "?create_streams=true"),
                      "/tmp/" + subject + "-relay.log");
  REQUIRE(relay.wait(60s) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);

  auto messages = read_all(subject, 1, 30s);
  REQUIRE(messages.size() == 1);
  test::check_sql_order_delivery(messages[0], subject, message_id);
  test::JetStreamAdmin(test::nats_url()).delete_stream(test::nats_stream_name(subject));
}

TEST_CASE("nats: 3 relay processes x 4 workers keep per-key order over 20,000 messages", "[nats][relay][order]") {
  constexpr int kMessages = 20000, kKeys = 200;
  auto url = test::create_database("natsorder");
  const auto subject = test::nats_subject("orders");
  const auto stream = test::nats_stream_name(subject);
  test::JetStreamAdmin admin(test::nats_url());
  admin.add_stream(stream, {subject});
  test::fill_outbox(url, subject, kMessages, kKeys);

  const auto started = std::chrono::steady_clock::now();
  std::vector<test::Process> relays;
  for (int p = 0; p < 3; ++p)
    relays.emplace_back(test::relay_drain_command(url, test::nats_url(), {"--workers", "4", "--batch-size", "200"}),
                        "/tmp/" + subject + "-relay" + std::to_string(p) + ".log");
  for (auto& relay : relays) CHECK(relay.wait(5min) == std::optional<int>(0));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  WARN("3 relays x 4 workers drained " << kMessages << " messages in " << seconds << " s ("
                                       << kMessages / seconds << " msg/s end to end)");
  CHECK(test::outbox_rows(url) == 0);
  // Nats-Msg-Id dedup: nothing stored twice even if a batch was re-published.
  CHECK(admin.message_count(stream) == kMessages);

  auto messages = read_all(subject, kMessages);
  std::set<std::string> ids;
  test::PerKeySequence order;
  int64_t last_offset = 0;
  for (const auto& d : messages) {
    ids.insert(d.message.message_id);
    CHECK(d.offset > last_offset);  // read in stream sequence order
    last_offset = d.offset;
    order.add(d.message);
  }
  CHECK(messages.size() == static_cast<size_t>(kMessages));
  CHECK(ids.size() == static_cast<size_t>(kMessages));
  CHECK(order.violations() == 0);
  admin.delete_stream(stream);
}

TEST_CASE("nats: the inbox consumer processes each message once under redelivery", "[nats][consumer]") {
  constexpr int kMessages = 1000;
  auto url = test::create_database("natsinbox");
  const auto subject = test::nats_subject("billing");
  const auto stream = test::nats_stream_name(subject);
  test::JetStreamAdmin admin(test::nats_url());
  admin.add_stream(stream, {subject});
  test::fill_outbox(url, subject, kMessages, 50);
  test::Process relay(test::relay_drain_command(url, test::nats_url()), "/tmp/" + subject + "-relay.log");
  REQUIRE(relay.wait(120s) == std::optional<int>(0));
  REQUIRE(admin.message_count(stream) == kMessages);

  test::create_effects_table(url);
  auto nats_consumer = consumer(subject, 100, 1s);
  LoseSomeAcks lossy(*nats_consumer, 10);
  txbox::consumer::InboxConsumer inbox_consumer(
      lossy, test::fast_commit(url), txbox::inbox::Inbox("billing"),
      [](pqxx::transaction_base& tx, const Delivery& d) {
        tx.exec0("INSERT INTO effects (message_id, message_key, payload) VALUES (" + tx.quote(d.message.message_id) +
                 ", " + (d.message.key ? tx.quote(*d.message.key) : "NULL") + ", " + tx.quote(d.message.payload) + ")");
      });
  auto deadline = std::chrono::steady_clock::now() + 120s;
  inbox_consumer.run({}, [&](const txbox::consumer::ConsumeStats& s) {
    return (s.processed >= kMessages && s.duplicates >= static_cast<uint64_t>(lossy.lost)) ||
           std::chrono::steady_clock::now() > deadline;
  });
  auto stats = inbox_consumer.stats();
  INFO("processed " << stats.processed << ", duplicates " << stats.duplicates << ", lost acks " << lossy.lost);
  CHECK(lossy.lost >= kMessages / 10);
  CHECK(stats.processed == static_cast<uint64_t>(kMessages));
  CHECK(stats.duplicates >= static_cast<uint64_t>(lossy.lost));
  CHECK(test::scalar(url, "SELECT count(*) FROM effects") == kMessages);
  CHECK(test::scalar(url, "SELECT count(DISTINCT message_id) FROM effects") == kMessages);
  nats_consumer->close();
  admin.delete_stream(stream);
}

TEST_CASE("nats: a row whose destination addresses the JetStream API is dead-lettered and administers nothing",
          "[nats][relay]") {
  auto url = test::create_database("natsapi");
  const auto subject = test::nats_subject("orders");
  const auto stream = test::nats_stream_name(subject);
  test::JetStreamAdmin admin(test::nats_url());
  admin.add_stream(stream, {subject});
  test::fill_outbox(url, subject, 10, 2);
  {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    for (const std::string& api : std::vector<std::string>{"$JS.API.STREAM.DELETE." + stream,
                                                            "$JS.API.STREAM.PURGE." + stream, "$KV.config.x",
                                                            "$SYS.REQ.SERVER.PING"})
      tx.exec0("INSERT INTO txbox.outbox (destination, message_key) VALUES (" + tx.quote(api) + ", 'admin')");
  }
  auto r = test::run(test::relay_drain_command(url, test::nats_url()), 120s);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(test::outbox_rows(url) == 0);
  // The stream and its messages are still there; the four rows are dead letters.
  CHECK(admin.message_count(stream) == 10);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters WHERE error_class = 'permanent' AND "
                          "destination LIKE '$%' AND last_error LIKE '%$%'") == 4);
}
