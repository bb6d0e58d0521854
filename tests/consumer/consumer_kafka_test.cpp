// The inbox consumer on Kafka: retries, dead-letter topic, offsets only
// after the inbox commit, redelivery after a crash skipped by the inbox.
#include <catch2/catch.hpp>
#include <pqxx/pqxx>
#include <thread>

#include "support/test_env.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/kafka/kafka.hpp"

namespace test = txbox::test;
using txbox::brokers::Delivery;
using txbox::consumer::InboxConsumer;
using txbox::consumer::Result;

namespace {

struct Fixture {
  std::string url = test::create_database("consumer");
  std::string topic = test::unique_name("events");
  std::string group = test::unique_name("group");
  std::shared_ptr<txbox::brokers::Publisher> publisher;
  Fixture() {
    txbox::kafka::ProducerOptions options;
    options.bootstrap_servers = test::kafka_bootstrap();
    publisher = txbox::kafka::make_publisher(options);
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec0("CREATE TABLE effects (message_id text, payload text)");
    tx.commit();
  }
  void publish(const std::vector<std::string>& payloads) {
    std::vector<txbox::brokers::Message> messages;
    for (size_t i = 0; i < payloads.size(); ++i)
      messages.push_back({test::unique_name("id"), topic, std::string("k"), payloads[i], {}});
    for (const auto& r : publisher->publish(messages, std::chrono::seconds(30))) REQUIRE(r.confirmed);
  }
  std::unique_ptr<txbox::brokers::Consumer> consumer(const std::vector<std::string>& topics = {}) {
    txbox::kafka::ConsumerOptions options;
    options.bootstrap_servers = test::kafka_bootstrap();
    options.group_id = group;
    options.topics = topics.empty() ? std::vector<std::string>{topic} : topics;
    options.session_timeout = std::chrono::milliseconds(3000);
    options.properties["heartbeat.interval.ms"] = "1000";
    return txbox::kafka::make_consumer(options);
  }
  long effects() {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    return tx.exec1("SELECT count(*) FROM effects")[0].as<long>();
  }
};

void record(pqxx::transaction_base& tx, const Delivery& d) {
  tx.exec0("INSERT INTO effects VALUES (" + tx.quote(d.message.message_id) + ", " + tx.quote(d.message.payload) + ")");
}

std::optional<Result> poll_until_message(InboxConsumer& c, std::chrono::seconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline)
    if (auto r = c.poll_once()) return r;
  return std::nullopt;
}

// Consumer decorator that "crashes" before its first ack: the ack is lost.
struct LoseFirstAck : txbox::brokers::Consumer {
  txbox::brokers::Consumer& inner;
  bool lost = false;
  explicit LoseFirstAck(txbox::brokers::Consumer& c) : inner(c) {}
  std::optional<Delivery> poll(std::chrono::milliseconds t) override { return inner.poll(t); }
  void ack(const Delivery& d) override {
    if (!lost) {
      lost = true;
      return;
    }
    inner.ack(d);
  }
  void close() override { inner.close(); }
};

}  // namespace

TEST_CASE("a failing handler is retried in place and its effect happens once", "[consumer]") {
  Fixture f;
  f.publish({"m1"});
  auto kafka = f.consumer();
  int calls = 0;
  InboxConsumer c(*kafka, f.url, txbox::inbox::Inbox("c"), [&](pqxx::transaction_base& tx, const Delivery& d) {
    record(tx, d);
    if (++calls < 3) throw std::runtime_error("downstream busy");
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto stats = c.run({}, [&](const auto& s) { return s.processed == 1 || std::chrono::steady_clock::now() > deadline; });
  CHECK(stats.processed == 1);
  CHECK(stats.failures == 2);
  CHECK(f.effects() == 1);
}

TEST_CASE("after max attempts the message goes to <topic>.dlq with dlq headers and the offset moves on", "[consumer]") {
  Fixture f;
  f.publish({"poison", "good"});
  txbox::consumer::InboxConsumerOptions options;
  options.max_attempts = 3;
  options.retry_base = std::chrono::milliseconds(10);
  options.dead_letter_publisher = f.publisher;
  {
    auto kafka = f.consumer();
    InboxConsumer c(*kafka, f.url, txbox::inbox::Inbox("c"),
                    [](pqxx::transaction_base& tx, const Delivery& d) {
                      if (d.message.payload == "poison") throw std::runtime_error("cannot parse order");
                      record(tx, d);
                    },
                    options);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    auto stats = c.run({}, [&](const auto& s) { return s.processed == 1 || std::chrono::steady_clock::now() > deadline; });
    CHECK(stats.dead_lettered == 1);
    CHECK(stats.failures == 3);
    CHECK(stats.processed == 1);
    kafka->close();
  }
  CHECK(f.effects() == 1);
  // The dead-letter topic has it, with its provenance.
  txbox::kafka::ConsumerOptions dlq;
  dlq.bootstrap_servers = test::kafka_bootstrap();
  dlq.group_id = test::unique_name("dlq-reader");
  dlq.topics = {f.topic + ".dlq"};
  auto reader = txbox::kafka::make_consumer(dlq);
  std::optional<Delivery> letter;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!letter && std::chrono::steady_clock::now() < deadline) letter = reader->poll(std::chrono::milliseconds(200));
  REQUIRE(letter);
  CHECK(letter->message.payload == "poison");
  std::map<std::string, std::string> h(letter->message.headers.begin(), letter->message.headers.end());
  CHECK(h["dlq-error"] == "cannot parse order");
  CHECK(h["dlq-error-class"] == "handler");
  CHECK(h["dlq-attempts"] == "3");
  CHECK(h["dlq-original-destination"] == f.topic);
  CHECK_THAT(h["dlq-original-position"], Catch::Matchers::Matches("[0-9]+/[0-9]+"));  // partition/offset
  CHECK_THAT(h["dlq-timestamp"], Catch::Matchers::Matches("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"));
  // Offsets were committed: the group does not see either message again.
  auto again = f.consumer();
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  int redelivered = 0;
  while (std::chrono::steady_clock::now() < end) redelivered += again->poll(std::chrono::milliseconds(200)).has_value();
  CHECK(redelivered == 0);
}

TEST_CASE("a PermanentError goes to the dead-letter topic without retries", "[consumer]") {
  Fixture f;
  f.publish({"bad"});
  txbox::consumer::InboxConsumerOptions options;
  options.dead_letter_publisher = f.publisher;
  auto kafka = f.consumer();
  InboxConsumer c(*kafka, f.url, txbox::inbox::Inbox("c"),
                  [](pqxx::transaction_base&, const Delivery&) {
                    throw txbox::consumer::PermanentError("unknown event type");
                  },
                  options);
  CHECK(poll_until_message(c) == std::optional<Result>(Result::dead_lettered));
  CHECK(c.stats().failures == 1);
}

TEST_CASE("a crash between the inbox commit and the offset commit: the redelivery is a duplicate", "[consumer]") {
  Fixture f;
  f.publish({"once"});
  {
    auto kafka = f.consumer();
    LoseFirstAck crashing(*kafka);
    InboxConsumer c(crashing, f.url, txbox::inbox::Inbox("c"), record);
    CHECK(poll_until_message(c) == std::optional<Result>(Result::processed));
    kafka->close();  // leaves the group without having committed the offset
  }
  auto kafka = f.consumer();
  InboxConsumer c(*kafka, f.url, txbox::inbox::Inbox("c"), record);
  CHECK(poll_until_message(c, std::chrono::seconds(60)) == std::optional<Result>(Result::duplicate));
  CHECK(f.effects() == 1);
}

TEST_CASE("graceful shutdown finishes the message in hand, commits it and leaves the group", "[consumer]") {
  Fixture f;
  f.publish({"slow", "next"});
  std::stop_source stop;
  {
    auto kafka = f.consumer();
    // One message a batch, so "the message in hand" is exactly one (with
    // batches, the batch in hand is finished: consumer_batch_test).
    txbox::consumer::InboxConsumerOptions one_at_a_time;
    one_at_a_time.max_batch = 1;
    InboxConsumer c(
        *kafka, f.url, txbox::inbox::Inbox("c"),
        [&](pqxx::transaction_base& tx, const Delivery& d) {
          stop.request_stop();  // the signal arrives while this message is in hand
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          record(tx, d);
        },
        one_at_a_time);
    auto stats = c.run(stop.get_token());
    CHECK(stats.processed == 1);
    kafka->close();
  }
  CHECK(f.effects() == 1);
  // The next member of the group starts after the committed message.
  auto kafka = f.consumer();
  InboxConsumer c(*kafka, f.url, txbox::inbox::Inbox("c"), record);
  CHECK(poll_until_message(c, std::chrono::seconds(60)) == std::optional<Result>(Result::processed));
  CHECK(f.effects() == 2);
  pqxx::connection conn(f.url);
  pqxx::nontransaction tx(conn);
  CHECK(tx.exec1("SELECT count(*) FROM effects WHERE payload = 'next'")[0].as<int>() == 1);
}
