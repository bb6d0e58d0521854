// The RabbitMQ adapter against the server at TXBOX_TEST_RABBITMQ_URL:
// confirms, destinations, unroutable / missing-exchange / reserved-exchange
// failures, batches in flight side by side and abandoned, probe(), consumer
// acks, redelivery and dead-lettering.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "rabbitmq_node.hpp"
#include "txbox/registry/registry.hpp"

namespace test = txbox::test;
namespace brokers = txbox::brokers;
namespace rabbitmq = txbox::rabbitmq;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<brokers::Publisher> publisher() {
  return rabbitmq::make_publisher(brokers::parse_broker_url(test::rabbitmq_url()));
}

brokers::Message message(const std::string& destination, int i, std::optional<std::string> key = std::nullopt) {
  brokers::Message m;
  m.message_id = fmt::format("00000000-0000-4000-8000-{:012d}", i);
  m.destination = destination;
  m.key = std::move(key);
  m.payload = fmt::format("{{\"n\":{}}}", i);
  m.headers = {{"content-type", "application/json"}, {"trace", "t-" + std::to_string(i)}};
  return m;
}

std::string header(const brokers::Delivery& d, const std::string& name) {
  for (const auto& [n, v] : d.message.headers)
    if (n == name) return v;
  return "<missing>";
}

std::vector<brokers::Delivery> poll_n(brokers::Consumer& consumer, std::size_t n, std::chrono::seconds timeout = 30s) {
  std::vector<brokers::Delivery> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    if (auto d = consumer.poll(200ms)) out.push_back(std::move(*d));
  }
  return out;
}

}  // namespace

TEST_CASE("rabbitmq: batch of 1000 confirmed and consumed back with all fields", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto consumer = test::rabbit_consumer(test::rabbitmq_url(), queue, 1000);  // declares the queue
  auto pub = publisher();
  std::vector<brokers::Message> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(message(queue, i, "key-" + std::to_string(i % 10)));
  auto start = std::chrono::steady_clock::now();
  auto results = pub->publish(batch, 30s);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  WARN("1000 confirmed messages published in " << ms << " ms");
  REQUIRE(results.size() == 1000);
  for (const auto& r : results) {
    INFO(r.error);
    REQUIRE(r.confirmed);
  }
  CHECK(pub->healthy());

  auto deliveries = poll_n(*consumer, 1000);
  REQUIRE(deliveries.size() == 1000);
  std::set<std::string> ids;
  for (std::size_t i = 0; i < deliveries.size(); ++i) {
    const auto& d = deliveries[i];
    const auto& m = batch[i];  // one publisher channel, one queue: published order
    CHECK(d.message.message_id == m.message_id);
    CHECK(d.message.key == m.key);
    CHECK(d.message.payload == m.payload);
    CHECK(header(d, "content-type") == "application/json");
    CHECK(header(d, "trace") == "t-" + std::to_string(i));
    CHECK(header(d, "message-id") == m.message_id);
    CHECK(d.source == queue);
    CHECK(d.delivery_attempt == 1);
    ids.insert(d.message.message_id);
    consumer->ack(d);
  }
  CHECK(ids.size() == 1000);
  CHECK_FALSE(consumer->poll(300ms));
}

TEST_CASE("rabbitmq: default-exchange queue and exchange/key destinations", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto exchange = test::unique_name("ex");
  rabbitmq::ConsumerOptions options;
  options.queue = queue;
  options.exchange = exchange;
  options.exchange_type = "topic";
  options.binding_keys = {"orders.*"};
  auto consumer = rabbitmq::make_consumer(brokers::parse_broker_url(test::rabbitmq_url()), options);
  auto pub = publisher();
  std::vector<brokers::Message> batch{message(queue, 1), message(exchange + "/orders.created", 2, "k2")};
  auto results = pub->publish(batch, 10s);
  REQUIRE(results.size() == 2);
  CHECK(results[0].confirmed);
  CHECK(results[1].confirmed);
  auto deliveries = poll_n(*consumer, 2);
  REQUIRE(deliveries.size() == 2);
  CHECK(deliveries[0].message.message_id == batch[0].message_id);
  CHECK(deliveries[0].message.destination == queue);
  CHECK_FALSE(deliveries[0].message.key);
  CHECK(deliveries[1].message.message_id == batch[1].message_id);
  CHECK(deliveries[1].message.destination == exchange + "/orders.created");
  CHECK(deliveries[1].message.key == std::optional<std::string>("k2"));
  for (auto& d : deliveries) consumer->ack(d);
}

TEST_CASE("rabbitmq: unroutable and missing-exchange messages fail permanently, the rest of the batch succeeds",
          "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto exchange = test::unique_name("ex");
  rabbitmq::ConsumerOptions options;
  options.queue = queue;
  options.exchange = exchange;
  options.binding_keys = {"bound"};
  auto consumer = rabbitmq::make_consumer(brokers::parse_broker_url(test::rabbitmq_url()), options);
  auto pub = publisher();
  auto missing = test::unique_name("nosuchexchange");
  std::vector<brokers::Message> batch{message(exchange + "/bound", 1),   message(exchange + "/unbound", 2),
                                      message(missing + "/k", 3),        message(test::unique_name("noqueue"), 4),
                                      message(queue, 5)};
  auto results = pub->publish(batch, 10s);
  REQUIRE(results.size() == 5);
  CHECK(results[0].confirmed);
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == brokers::ErrorClass::permanent);
  CHECK_THAT(results[1].error, Catch::Contains("no queue is bound for exchange '" + exchange + "' routing key 'unbound'") &&
                                   Catch::Contains("declare and bind a queue"));
  CHECK_FALSE(results[2].confirmed);
  CHECK(results[2].error_class == brokers::ErrorClass::permanent);
  CHECK_THAT(results[2].error, Catch::Contains("exchange '" + missing + "' does not exist") &&
                                   Catch::Contains("declare it"));
  CHECK_FALSE(results[3].confirmed);
  CHECK(results[3].error_class == brokers::ErrorClass::permanent);
  CHECK_THAT(results[3].error, Catch::Contains("declare the queue"));
  CHECK(results[4].confirmed);
  // The connection is still usable afterwards.
  auto again = pub->publish(std::vector<brokers::Message>{message(queue, 6)}, 10s);
  CHECK(again.at(0).confirmed);
  CHECK(poll_n(*consumer, 3).size() == 3);
}

TEST_CASE("rabbitmq: unacked messages are redelivered after close with delivery_attempt 2", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto url = test::rabbitmq_url();
  auto first = test::rabbit_consumer(url, queue);
  auto pub = publisher();
  REQUIRE(pub->publish(std::vector<brokers::Message>{message(queue, 1, "k")}, 10s).at(0).confirmed);
  auto d1 = first->poll(10s);
  REQUIRE(d1);
  CHECK(d1->delivery_attempt == 1);
  first->close();  // without ack
  auto second = test::rabbit_consumer(url, queue);
  auto d2 = second->poll(10s);
  REQUIRE(d2);
  CHECK(d2->message.message_id == d1->message.message_id);
  CHECK(d2->delivery_attempt == 2);
  second->ack(*d2);
  second->close();
  auto third = test::rabbit_consumer(url, queue);
  CHECK_FALSE(third->poll(500ms));
}

TEST_CASE("rabbitmq: ack_batch acks a run from the oldest unacked delivery with one multiple ack and never a "
          "delivery it was not given",
          "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto url = test::rabbitmq_url();
  std::vector<brokers::Message> messages;
  for (int i = 0; i < 10; ++i) messages.push_back(message(queue, i, "k" + std::to_string(i)));
  auto first = test::rabbit_consumer(url, queue);  // declares the queue
  for (const auto& r : publisher()->publish(messages, 10s)) REQUIRE(r.confirmed);
  auto got = poll_n(*first, 10);
  REQUIRE(got.size() == 10);
  // 0..3 (a run from the oldest: one multiple ack), then 6 and 8 alone;
  // 4, 5, 7 and 9 stay unacked.
  first->ack_batch(std::vector<brokers::Delivery>{got[2], got[0], got[3], got[1], got[6], got[8]});
  // Then 4 and 5: now the oldest unacked, a run again.
  first->ack_batch(std::vector<brokers::Delivery>{got[4], got[5]});
  first->close();
  auto second = test::rabbit_consumer(url, queue);
  auto again = poll_n(*second, 2, 10s);
  std::set<std::string> redelivered;
  for (const auto& d : again) redelivered.insert(d.message.message_id);
  CHECK(redelivered == std::set<std::string>{got[7].message.message_id, got[9].message.message_id});
  CHECK_FALSE(second->poll(500ms));
  second->ack_batch(again);
  second->close();
}

TEST_CASE("rabbitmq: the registry's consumer takes prefetch=N and names a bad or unknown property", "[rabbitmq]") {
  const auto queue = test::unique_name("q");
  auto consumer = txbox::brokers::open_consumer(test::rabbitmq_url(), {.source = queue, .group = "g",
                                                                      .properties = {{"prefetch", "800"}}});
  CHECK_FALSE(consumer->poll(100ms));
  consumer->close();
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"prefetch", "0"}, {"prefetch", "70000"}, {"prefetch", "8x"}, {"prefech", "800"}}) {
    INFO(name << "=" << value);
    try {
      txbox::brokers::open_consumer(test::rabbitmq_url(), {.source = queue, .group = "g", .properties = {{name, value}}});
      FAIL("accepted");
    } catch (const txbox::ConfigError& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains(name));
    }
  }
}

namespace {

// Publishes `m` to `queue`, has `consumer` dead-letter it and reads the
// dead letter from "<queue>.dlq" (the only one there), acked.
struct DeadLettered {
  brokers::Delivery original, dead;
};
DeadLettered dead_letter_one(brokers::Consumer& consumer, const std::string& queue, const brokers::Message& m,
                             const std::string& reason) {
  REQUIRE(publisher()->publish(std::vector<brokers::Message>{m}, 10s).at(0).confirmed);
  auto d = consumer.poll(10s);
  REQUIRE(d);
  CHECK(consumer.dead_letter(*d, reason));
  CHECK_FALSE(consumer.poll(300ms));
  rabbitmq::ConsumerOptions dlq;
  dlq.queue = queue + ".dlq";
  dlq.declare = false;
  auto dlq_consumer = rabbitmq::make_consumer(brokers::parse_broker_url(test::rabbitmq_url()), dlq);
  auto dead = dlq_consumer->poll(10s);
  REQUIRE(dead);
  dlq_consumer->ack(*dead);
  CHECK_FALSE(dlq_consumer->poll(300ms));  // one dead letter, not a copy and the rejected original
  return {std::move(*d), std::move(*dead)};
}

}  // namespace

TEST_CASE("rabbitmq: dead_letter() moves the message to the dead-letter queue, with the dlq-* headers", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto consumer = test::rabbit_consumer(test::rabbitmq_url(), queue);
  auto [d, dead] = dead_letter_one(*consumer, queue, message(queue, 7, "k"), "handler gave up:\nbad payload");
  CHECK(dead.message.message_id == d.message.message_id);
  CHECK(dead.message.key == std::optional<std::string>("k"));
  CHECK(dead.message.payload == d.message.payload);
  CHECK(header(dead, "content-type") == "application/json");
  CHECK(header(dead, "trace") == "t-7");
  CHECK(header(dead, "dlq-error") == "handler gave up: bad payload");
  CHECK(header(dead, "dlq-error-class") == "handler");
  CHECK(header(dead, "dlq-attempts") == "1");
  CHECK(header(dead, "dlq-original-destination") == queue);  // the default exchange, routing key = queue
  CHECK(header(dead, "dlq-original-position") == "<missing>");
  CHECK_THAT(header(dead, "dlq-timestamp"), Catch::EndsWith("Z"));
}

TEST_CASE("rabbitmq: without the configured dead-letter exchange, dead_letter() falls back to a reject", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  test::rabbit_consumer(test::rabbitmq_url(), queue)->close();  // declares the queue, its DLX and DLQ
  rabbitmq::ConsumerOptions options;
  options.queue = queue;
  options.declare = false;
  options.dead_letter_exchange = queue + ".no-such-exchange";
  auto consumer = rabbitmq::make_consumer(brokers::parse_broker_url(test::rabbitmq_url()), options);
  auto [d, dead] = dead_letter_one(*consumer, queue, message(queue, 8), "handler gave up");
  CHECK(dead.message.message_id == d.message.message_id);  // moved by the queue's own x-dead-letter-exchange
  CHECK(header(dead, "dlq-error") == "<missing>");          // RabbitMQ's x-death only (not a string header)
}

TEST_CASE("rabbitmq: URL validation and an unreachable broker", "[rabbitmq]") {
  CHECK_THROWS_WITH(rabbitmq::make_publisher(brokers::parse_broker_url("kafka://127.0.0.1:9092")),
                    Catch::Contains("amqp://"));
  CHECK_THROWS_WITH(rabbitmq::make_publisher(brokers::parse_broker_url("amqp://127.0.0.1:1/?bogus=1")),
                    Catch::Contains("unknown RabbitMQ option 'bogus'"));
  CHECK_THROWS_AS(rabbitmq::make_publisher(brokers::parse_broker_url(test::rabbitmq_url()), {{"heartbeat", "x"}}),
                  txbox::UsageError);
  auto url = brokers::parse_broker_url(test::rabbitmq_url());
  url.password = "wrong";
  CHECK_THROWS_AS(rabbitmq::make_publisher(url), brokers::BrokerError);

  auto pub = rabbitmq::make_publisher(brokers::parse_broker_url("amqp://guest:guest@127.0.0.1:1/"));
  CHECK_FALSE(pub->healthy());
  auto start = std::chrono::steady_clock::now();
  auto results = pub->publish(std::vector<brokers::Message>{message("q", 1)}, 2s);
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  REQUIRE(results.size() == 1);
  CHECK_FALSE(results[0].confirmed);
  CHECK(results[0].error_class == brokers::ErrorClass::outage);
  CHECK_THAT(results[0].error, Catch::Contains("127.0.0.1") && Catch::Contains("will be retried"));
  CHECK(results[0].error.find("guest:guest") == std::string::npos);
}

namespace {

// Whether the message ids of `deliveries` are `expected`, in that order.
std::vector<std::string> ids_of(const std::vector<brokers::Delivery>& deliveries) {
  std::vector<std::string> ids;
  for (const auto& d : deliveries) ids.push_back(d.message.message_id);
  return ids;
}

std::vector<std::string> ids_of(const std::vector<brokers::Message>& messages) {
  std::vector<std::string> ids;
  for (const auto& m : messages) ids.push_back(m.message_id);
  return ids;
}

}  // namespace

TEST_CASE("rabbitmq: two batches in flight from one thread on one publisher, each with its own results",
          "[rabbitmq]") {
  auto q1 = test::unique_name("q"), q2 = test::unique_name("q");
  auto c1 = test::rabbit_consumer(test::rabbitmq_url(), q1, 1000);
  auto c2 = test::rabbit_consumer(test::rabbitmq_url(), q2, 1000);
  auto pub = publisher();
  for (int round = 0; round < 3; ++round) {  // the second and third rounds reuse the pooled connections
    INFO("round " << round);
    std::vector<brokers::Message> a, b;
    for (int i = 0; i < 300; ++i) a.push_back(message(q1, round * 1000 + i, "k" + std::to_string(i % 7)));
    for (int i = 0; i < 200; ++i) {
      // Every 50th message of b is unroutable: its results must stay in b.
      b.push_back(message(i % 50 == 7 ? test::unique_name("noqueue") : q2, 100000 + round * 1000 + i,
                          "k" + std::to_string(i % 5)));
    }
    auto pending_a = pub->start(a);
    auto pending_b = pub->start(b);
    auto deadline = std::chrono::steady_clock::now() + 30s;
    auto results_b = pending_b->wait(deadline);  // the later batch first
    auto results_a = pending_a->wait(deadline);
    REQUIRE(results_a.size() == a.size());
    REQUIRE(results_b.size() == b.size());
    for (const auto& r : results_a) {
      INFO(r.error);
      CHECK(r.confirmed);
    }
    std::vector<brokers::Message> routed;
    for (std::size_t i = 0; i < b.size(); ++i) {
      INFO(i << ": " << results_b[i].error);
      if (i % 50 == 7) {
        CHECK_FALSE(results_b[i].confirmed);
        CHECK(results_b[i].error_class == brokers::ErrorClass::permanent);
        CHECK_THAT(results_b[i].error, Catch::Contains("no queue named"));
      } else {
        CHECK(results_b[i].confirmed);
        routed.push_back(b[i]);
      }
    }
    CHECK(ids_of(poll_n(*c1, a.size())) == ids_of(a));
    CHECK(ids_of(poll_n(*c2, routed.size())) == ids_of(routed));
  }
  CHECK_FALSE(c1->poll(300ms));
  CHECK_FALSE(c2->poll(300ms));
  CHECK(pub->healthy());
}

TEST_CASE("rabbitmq: an abandoned PendingPublish is safe, the next batch gets exactly its own results",
          "[rabbitmq]") {
  auto queue = test::unique_name("q");
  test::rabbit_consumer(test::rabbitmq_url(), queue)->close();  // declares the queue
  auto pub = publisher();
  std::set<std::string> abandoned_ids;
  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    std::vector<brokers::Message> abandoned;
    for (int i = 0; i < 500; ++i) abandoned.push_back(message(queue, round * 10000 + i, "k"));
    for (const auto& m : abandoned) abandoned_ids.insert(m.message_id);
    pub->start(abandoned).reset();  // destroyed without wait()

    std::vector<brokers::Message> batch;
    for (int i = 0; i < 100; ++i) {
      batch.push_back(message(i == 40 ? test::unique_name("noqueue") : queue, 500000 + round * 1000 + i, "k"));
    }
    auto results = pub->publish(batch, 30s);
    REQUIRE(results.size() == batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      INFO(i << ": " << results[i].error);
      CHECK(results[i].confirmed == (i != 40));
    }
    CHECK(results[40].error_class == brokers::ErrorClass::permanent);
  }
  // Every message of the confirmed batches arrived; abandoned ones may have.
  auto delivered = test::drain_queue(test::rabbitmq_url(), queue, 2s);
  std::set<std::string> confirmed_seen;
  for (const auto& id : delivered) {
    if (!abandoned_ids.contains(id)) confirmed_seen.insert(id);
  }
  CHECK(confirmed_seen.size() == 4 * 99);
  CHECK(pub->healthy());
}

TEST_CASE("rabbitmq: amq. exchanges are refused without publishing, the rest of the batch goes through",
          "[rabbitmq]") {
  auto queue = test::unique_name("q");
  // A queue bound to amq.direct: a refused message would arrive here if it were sent.
  rabbitmq::ConsumerOptions options;
  options.queue = queue;
  options.exchange = "amq.direct";
  options.exchange_type = "direct";
  options.binding_keys = {queue};
  auto consumer = rabbitmq::make_consumer(brokers::parse_broker_url(test::rabbitmq_url()), options);
  auto pub = publisher();
  std::vector<brokers::Message> batch{message("amq.direct/" + queue, 1, "k"), message(queue, 2, "k"),
                                      message("amq.topic/" + queue, 3), message("amq.direct/x", 4)};
  auto results = pub->publish(batch, 10s);
  REQUIRE(results.size() == 4);
  for (std::size_t i : {0u, 2u, 3u}) {
    INFO(i);
    CHECK_FALSE(results[i].confirmed);
    CHECK(results[i].error_class == brokers::ErrorClass::permanent);
    CHECK_THAT(results[i].error, Catch::Contains("starting with 'amq.'") &&
                                     Catch::Contains("declare an exchange of your own"));
  }
  CHECK(results[1].confirmed);
  auto delivered = poll_n(*consumer, 2, 5s);  // waits for a second message that must not come
  REQUIRE(delivered.size() == 1);
  CHECK(delivered[0].message.message_id == batch[1].message_id);
}

TEST_CASE("rabbitmq: headers filling exactly one frame are sent, one byte more is refused", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto consumer = test::rabbit_consumer(test::rabbitmq_url(), queue);
  auto pub = publisher();
  auto fit = message(queue, 1, "k");
  fit.headers = {{"pad", ""}};
  // The content header frame, computed independently of the adapter: frame
  // header and end, class/weight/body size, flags, delivery mode, message id,
  // the headers table with message-id and message-key. 131072 is the
  // frame_max RabbitMQ and rabbitmq-c agree on by default.
  auto frame_size = [](const brokers::Message& m) {
    std::size_t size = 7 + 1 + 12 + 2 + 1 + 1 + m.message_id.size() + 4;
    for (const auto& [n, v] : m.headers) size += 1 + n.size() + 1 + 4 + v.size();
    size += 1 + std::string("message-id").size() + 1 + 4 + m.message_id.size();
    if (m.key) size += 1 + std::string("message-key").size() + 1 + 4 + m.key->size();
    return size;
  };
  const std::size_t padding = 131072 - frame_size(fit);
  fit.headers = {{"pad", std::string(padding, 'x')}};
  REQUIRE(frame_size(fit) == 131072);
  auto over = fit;
  over.message_id = "00000000-0000-4000-8000-000000000002";
  over.headers = {{"pad", std::string(padding + 1, 'x')}};
  REQUIRE(frame_size(over) == 131073);
  auto results = pub->publish(std::vector<brokers::Message>{fit, over, message(queue, 3, "k")}, 10s);
  REQUIRE(results.size() == 3);
  INFO(results[0].error);
  CHECK(results[0].confirmed);
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == brokers::ErrorClass::permanent);
  CHECK_THAT(results[1].error, Catch::Contains("more than one AMQP frame"));
  CHECK(results[2].confirmed);
  auto delivered = poll_n(*consumer, 2);
  REQUIRE(delivered.size() == 2);
  CHECK(delivered[0].message.message_id == fit.message_id);
  CHECK(delivered[1].message.message_id == message(queue, 3).message_id);
}

TEST_CASE("rabbitmq: probe() is true on a running broker, false quickly on an unreachable one", "[rabbitmq]") {
  auto pub = publisher();
  auto start = std::chrono::steady_clock::now();
  CHECK(pub->probe(5s));
  CHECK(pub->probe(5s));  // on the pooled connection
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(pub->healthy());
  // The probe leaves nothing behind that a batch could trip over.
  auto queue = test::unique_name("q");
  auto consumer = test::rabbit_consumer(test::rabbitmq_url(), queue);
  CHECK(pub->publish(std::vector<brokers::Message>{message(queue, 1)}, 10s).at(0).confirmed);

  auto refused = rabbitmq::make_publisher(brokers::parse_broker_url("amqp://guest:guest@127.0.0.1:1/"));
  for (int i = 0; i < 3; ++i) {  // every probe tries again, unthrottled
    start = std::chrono::steady_clock::now();
    CHECK_FALSE(refused->probe(2s));
    CHECK(std::chrono::steady_clock::now() - start < 2500ms);
  }
  CHECK_FALSE(refused->healthy());
  // A port that takes the connection but never answers AMQP: bounded by the timeout.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  auto silent = rabbitmq::make_publisher(
      brokers::parse_broker_url(fmt::format("amqp://guest:guest@127.0.0.1:{}/?connect_timeout_ms=1000", ntohs(addr.sin_port))));
  start = std::chrono::steady_clock::now();
  CHECK_FALSE(silent->probe(1500ms));
  CHECK(std::chrono::steady_clock::now() - start < 4s);
  ::close(fd);
}
