// The RabbitMQ adapter against the server at TXBOX_TEST_RABBITMQ_URL:
// confirms, destinations, unroutable / missing-exchange failures, consumer
// acks, redelivery and dead-lettering.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "rabbitmq_support.hpp"

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

TEST_CASE("rabbitmq: dead_letter() moves the message to the dead-letter queue", "[rabbitmq]") {
  auto queue = test::unique_name("q");
  auto url = test::rabbitmq_url();
  auto consumer = test::rabbit_consumer(url, queue);
  auto pub = publisher();
  REQUIRE(pub->publish(std::vector<brokers::Message>{message(queue, 7, "k")}, 10s).at(0).confirmed);
  auto d = consumer->poll(10s);
  REQUIRE(d);
  CHECK(consumer->dead_letter(*d, "handler gave up"));
  CHECK_FALSE(consumer->poll(300ms));
  rabbitmq::ConsumerOptions dlq;
  dlq.queue = queue + ".dlq";
  dlq.declare = false;
  auto dlq_consumer = rabbitmq::make_consumer(brokers::parse_broker_url(url), dlq);
  auto dead = dlq_consumer->poll(10s);
  REQUIRE(dead);
  CHECK(dead->message.message_id == d->message.message_id);
  CHECK(dead->message.payload == d->message.payload);
  dlq_consumer->ack(*dead);
}

TEST_CASE("rabbitmq: URL validation and an unreachable broker", "[rabbitmq]") {
  CHECK_THROWS_WITH(rabbitmq::make_publisher(brokers::parse_broker_url("kafka://127.0.0.1:9092")),
                    Catch::Contains("amqp://"));
  CHECK_THROWS_WITH(rabbitmq::make_publisher(brokers::parse_broker_url("amqp://127.0.0.1:1/?bogus=1")),
                    Catch::Contains("unknown RabbitMQ option 'bogus'"));
  CHECK_THROWS_AS(rabbitmq::make_publisher(brokers::parse_broker_url(test::rabbitmq_url()), {{"heartbeat", "x"}}),
                  std::invalid_argument);
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
  CHECK(results[0].error_class == brokers::ErrorClass::transient);
  CHECK_THAT(results[0].error, Catch::Contains("127.0.0.1"));
}
