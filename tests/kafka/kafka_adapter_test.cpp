// Kafka adapter integration tests against TXBOX_TEST_KAFKA_BOOTSTRAP (the
// mock cluster from scripts/kafka-mock.sh, or a real cluster that
// auto-creates topics). Every test uses its own topic and consumer group.

#include <librdkafka/rdkafka.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/test_env.hpp"
#include "txbox/kafka/kafka.hpp"

using namespace std::chrono_literals;
using txbox::brokers::BrokerError;
using txbox::brokers::Delivery;
using txbox::brokers::ErrorClass;
using txbox::brokers::Headers;
using txbox::brokers::Message;
using txbox::brokers::PublishResult;
namespace kafka = txbox::kafka;

namespace {

kafka::ProducerOptions producer_options() {
  kafka::ProducerOptions options;
  options.bootstrap_servers = txbox::test::kafka_bootstrap();
  return options;
}

kafka::ConsumerOptions consumer_options(const std::string& topic, const std::string& group) {
  kafka::ConsumerOptions options;
  options.bootstrap_servers = txbox::test::kafka_bootstrap();
  options.group_id = group;
  options.topics = {topic};
  return options;
}

Message make_message(const std::string& topic, int i, std::optional<std::string> key) {
  Message m;
  m.message_id = "id-" + topic + "-" + std::to_string(i);
  m.destination = topic;
  m.key = std::move(key);
  m.payload = "payload-" + std::to_string(i);
  m.headers = {{"content-type", "application/json"}, {"trace", "t-" + std::to_string(i)}};
  return m;
}

// `count` messages to `topic` (ids 0..count-1) over `keys` keys
// "<key_prefix><i % keys>".
std::vector<Message> keyed_messages(const std::string& topic, int count, const std::string& key_prefix, int keys) {
  std::vector<Message> messages;
  for (int i = 0; i < count; ++i) messages.push_back(make_message(topic, i, key_prefix + std::to_string(i % keys)));
  return messages;
}

void require_all_confirmed(const std::vector<PublishResult>& results, size_t expected) {
  REQUIRE(results.size() == expected);
  for (size_t i = 0; i < results.size(); ++i) {
    INFO("message " << i << ": " << results[i].error);
    REQUIRE(results[i].confirmed);
  }
}

// Polls until `count` deliveries arrived or `deadline` passed.
std::vector<Delivery> consume(txbox::brokers::Consumer& consumer, size_t count,
                              std::chrono::seconds within = 30s) {
  std::vector<Delivery> out;
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    if (auto d = consumer.poll(200ms)) {
      out.push_back(std::move(*d));
    }
  }
  return out;
}

// A bare librdkafka producer on the test cluster, for the metadata requests
// the adapter does not make; the caller destroys it.
rd_kafka_t* metadata_client() {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  REQUIRE(rd_kafka_conf_set(conf, "bootstrap.servers", txbox::test::kafka_bootstrap().c_str(),
                            errstr, sizeof errstr) == RD_KAFKA_CONF_OK);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  REQUIRE(rk != nullptr);
  return rk;
}

// Partition count of an existing topic, from the cluster's metadata.
int32_t partition_count(const std::string& topic) {
  rd_kafka_t* rk = metadata_client();
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
  int32_t count = -1;
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
      md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    count = md->topics[0].partition_cnt;
  }
  if (md != nullptr) {
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
  return count;
}

}  // namespace

TEST_CASE("a batch of 1000 messages is published and every one confirmed", "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_batch");
  auto publisher = kafka::make_publisher(producer_options());
  auto messages = keyed_messages(topic, 1000, "key-", 17);
  require_all_confirmed(publisher->publish(messages, 30s), 1000);
  CHECK(publisher->healthy());
}

TEST_CASE("concurrent publishers on one shared producer each get their own reports", "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_concurrent");
  auto publisher = kafka::make_publisher(producer_options());
  constexpr int kThreads = 6;
  constexpr int kBatches = 5;
  constexpr int kPerBatch = 100;
  std::vector<std::vector<std::vector<PublishResult>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Message> batch;
        for (int i = 0; i < kPerBatch; ++i) {
          batch.push_back(make_message(topic, (t * kBatches + b) * kPerBatch + i, std::nullopt));
        }
        results[t].push_back(publisher->publish(batch, 30s));
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  for (const auto& per_thread : results) {
    REQUIRE(per_thread.size() == kBatches);
    for (const auto& batch : per_thread) {
      require_all_confirmed(batch, kPerBatch);
    }
  }
}

TEST_CASE("published messages are consumed back with topic, key, value, headers and message id",
          "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_roundtrip");
  auto publisher = kafka::make_publisher(producer_options());
  auto messages = keyed_messages(topic, 20, "k", 20);  // a key each
  messages[3].payload = std::string("bin\0ary\xff", 8);
  messages[4].headers.clear();
  require_all_confirmed(publisher->publish(messages, 30s), messages.size());

  auto consumer = kafka::make_consumer(consumer_options(topic, txbox::test::unique_name("g")));
  const auto deliveries = consume(*consumer, messages.size());
  REQUIRE(deliveries.size() == messages.size());
  std::map<std::string, Delivery> by_id;
  for (const auto& d : deliveries) {
    by_id[d.message.message_id] = d;
  }
  REQUIRE(by_id.size() == messages.size());
  for (const auto& m : messages) {
    INFO(m.message_id);
    REQUIRE(by_id.count(m.message_id) == 1);
    const Delivery& d = by_id[m.message_id];
    CHECK(d.source == topic);
    CHECK(d.message.key == m.key);
    CHECK(d.message.payload == m.payload);
    CHECK(d.message.headers == m.headers);  // message-id removed, order kept
    CHECK(d.partition >= 0);
    CHECK(d.offset >= 0);
  }
  consumer->close();
  consumer->close();  // idempotent
}

TEST_CASE("a message without a key is consumed with no key", "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_nullkey");
  auto publisher = kafka::make_publisher(producer_options());
  std::vector<Message> messages = {make_message(topic, 0, std::nullopt),
                                   make_message(topic, 1, std::string())};
  messages[0].headers.clear();
  require_all_confirmed(publisher->publish(messages, 30s), 2);

  auto consumer = kafka::make_consumer(consumer_options(topic, txbox::test::unique_name("g")));
  const auto deliveries = consume(*consumer, 2);
  REQUIRE(deliveries.size() == 2);
  for (const auto& d : deliveries) {
    if (d.message.message_id == messages[0].message_id) {
      CHECK_FALSE(d.message.key.has_value());
      CHECK(d.message.headers.empty());
    } else {
      CHECK(d.message.message_id == messages[1].message_id);
    }
  }
}

TEST_CASE("keyed messages land on the Java-compatible murmur2 partition", "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_partition");
  auto publisher = kafka::make_publisher(producer_options());
  std::vector<Message> messages;
  for (int i = 0; i < 60; ++i) {
    messages.push_back(make_message(topic, i, "customer-" + std::to_string(i * 7919)));
  }
  require_all_confirmed(publisher->publish(messages, 30s), messages.size());
  const int32_t partitions = partition_count(topic);
  REQUIRE(partitions > 1);

  auto consumer = kafka::make_consumer(consumer_options(topic, txbox::test::unique_name("g")));
  const auto deliveries = consume(*consumer, messages.size());
  REQUIRE(deliveries.size() == messages.size());
  std::set<int32_t> used;
  for (const auto& d : deliveries) {
    REQUIRE(d.message.key.has_value());
    INFO("key " << *d.message.key);
    CHECK(d.partition == kafka::murmur2_partition(*d.message.key, partitions));
    used.insert(d.partition);
  }
  CHECK(used.size() > 1);
}

TEST_CASE("a bad passthrough property throws BrokerError naming it", "[kafka]") {
  auto options = producer_options();
  options.properties["definitely.not.a.property"] = "x";
  CHECK_THROWS_WITH(kafka::make_publisher(options), Catch::Contains("definitely.not.a.property"));
  options.properties = {{"linger.ms", "soon"}};
  CHECK_THROWS_WITH(kafka::make_publisher(options), Catch::Contains("linger.ms"));
  auto consumer = consumer_options("t", "g");
  consumer.properties["no.such.consumer.property"] = "1";
  CHECK_THROWS_AS(kafka::make_consumer(consumer), BrokerError);
}

TEST_CASE("acked messages are not delivered again to the same consumer group", "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_ack");
  const std::string group = txbox::test::unique_name("g");
  // The mock cluster only completes the second member's join after the
  // group's session timeout, so keep it short here.
  auto options = [&] {
    auto o = consumer_options(topic, group);
    o.session_timeout = 3000ms;
    o.properties["heartbeat.interval.ms"] = "1000";
    return o;
  };
  auto publisher = kafka::make_publisher(producer_options());
  std::vector<Message> messages;
  for (int i = 0; i < 10; ++i) {
    messages.push_back(make_message(topic, i, std::string("same-key")));  // one partition, in order
  }
  require_all_confirmed(publisher->publish(messages, 30s), messages.size());

  {
    auto first = kafka::make_consumer(options());
    const auto deliveries = consume(*first, messages.size());
    REQUIRE(deliveries.size() == messages.size());
    for (size_t i = 0; i < deliveries.size(); ++i) {
      REQUIRE(deliveries[i].message.message_id == messages[i].message_id);
    }
    first->ack(deliveries[2]);
    first->ack(deliveries[5]);  // commits offset+1: messages 0..5 are done
    first->close();
    CHECK_THROWS_AS(first->ack(deliveries[6]), BrokerError);
  }

  auto second = kafka::make_consumer(options());
  auto deliveries = consume(*second, 4);
  // Give a wrongly re-delivered message a chance to show up as well.
  for (int i = 0; i < 5; ++i) {
    if (auto d = second->poll(200ms)) {
      deliveries.push_back(std::move(*d));
    }
  }
  REQUIRE(deliveries.size() == 4);
  for (size_t i = 0; i < deliveries.size(); ++i) {
    CHECK(deliveries[i].message.message_id == messages[6 + i].message_id);
  }
  second->ack(deliveries.back());
}

TEST_CASE("a message over the size limit fails permanently with a clear error", "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_toolarge");
  auto options = producer_options();
  options.properties["message.max.bytes"] = "10000";
  auto publisher = kafka::make_publisher(options);
  std::vector<Message> messages = {make_message(topic, 0, std::nullopt),
                                   make_message(topic, 1, std::nullopt),
                                   make_message(topic, 2, std::nullopt)};
  messages[1].payload.assign(20000, 'x');
  const auto results = publisher->publish(messages, 30s);
  REQUIRE(results.size() == 3);
  CHECK(results[0].confirmed);
  CHECK(results[2].confirmed);
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == ErrorClass::permanent);
  CHECK_THAT(results[1].error, Catch::Contains("bytes") && Catch::Contains("message.max.bytes") &&
                                   Catch::Contains("make the payload smaller or raise the limit"));
}

TEST_CASE("two batches in flight on one publisher from one thread each get their own results",
          "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_two_in_flight");
  auto publisher = kafka::make_publisher(producer_options());
  std::vector<Message> first, second;
  for (int i = 0; i < 200; ++i) {
    first.push_back(make_message(topic, i, "key-" + std::to_string(i % 7)));
    second.push_back(make_message(topic, 1000 + i, "key-" + std::to_string(i % 7)));
  }
  // The second batch also carries one message of its own that cannot go
  // anywhere, so its results differ from the first batch's.
  second[50].destination = "__consumer_offsets";
  auto pending_first = publisher->start(first);
  auto pending_second = publisher->start(second);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  // Collected in the opposite order of starting.
  const auto second_results = pending_second->wait(deadline);
  const auto first_results = pending_first->wait(deadline);
  require_all_confirmed(first_results, first.size());
  REQUIRE(second_results.size() == second.size());
  for (size_t i = 0; i < second.size(); ++i) {
    INFO("message " << i << ": " << second_results[i].error);
    if (i == 50) {
      CHECK_FALSE(second_results[i].confirmed);
      CHECK(second_results[i].error_class == ErrorClass::permanent);
    } else {
      CHECK(second_results[i].confirmed);
    }
  }

  auto consumer = kafka::make_consumer(consumer_options(topic, txbox::test::unique_name("g")));
  const auto deliveries = consume(*consumer, first.size() + second.size() - 1);
  std::map<std::string, int> copies;
  for (const auto& d : deliveries) ++copies[d.message.message_id];
  CHECK(copies.size() == first.size() + second.size() - 1);
  for (const auto& [id, n] : copies) {
    INFO(id);
    CHECK(n == 1);
  }
}

TEST_CASE("abandoning a PendingPublish without wait() is safe and its messages still go out",
          "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_abandon");
  auto publisher = kafka::make_publisher(producer_options());
  auto abandoned_messages = keyed_messages(topic, 300, "k", 5);
  // Destroyed at once, before any delivery report can have arrived: the
  // reports find the opaque state alive and are ignored.
  publisher->start(abandoned_messages).reset();
  {
    auto pending = publisher->start(abandoned_messages);  // again, maybe still queued
    pending.reset();
  }
  // The publisher keeps working for the next batches.
  std::vector<Message> after;
  for (int i = 0; i < 20; ++i) after.push_back(make_message(topic, 5000 + i, std::nullopt));
  require_all_confirmed(publisher->publish(after, 30s), after.size());

  auto consumer = kafka::make_consumer(consumer_options(topic, txbox::test::unique_name("g")));
  const auto deliveries = consume(*consumer, abandoned_messages.size() + after.size());
  std::set<std::string> seen;
  for (const auto& d : deliveries) seen.insert(d.message.message_id);
  for (const auto& m : abandoned_messages) {
    INFO(m.message_id);
    CHECK(seen.contains(m.message_id));
  }
  // Destroying the publisher with nothing pending is prompt.
  const auto start = std::chrono::steady_clock::now();
  publisher.reset();
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("a destination addressing Kafka's internal topics fails permanently and nothing is "
          "produced",
          "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_internal");
  // If this one were produced, the cluster (which auto-creates topics) would
  // have it afterwards.
  const std::string internal = "__" + txbox::test::unique_name("txbox_internal");
  auto publisher = kafka::make_publisher(producer_options());
  std::vector<Message> messages = {make_message(topic, 0, std::string("k")),
                                   make_message("__consumer_offsets", 1, std::string("k")),
                                   make_message(internal, 2, std::string("k")),
                                   make_message(topic, 3, std::string("k"))};
  const auto results = publisher->publish(messages, 30s);
  REQUIRE(results.size() == messages.size());
  CHECK(results[0].confirmed);
  CHECK(results[3].confirmed);  // the refused messages do not hold their key back
  for (size_t i : {1, 2}) {
    INFO(results[i].error);
    CHECK_FALSE(results[i].confirmed);
    CHECK(results[i].error_class == ErrorClass::permanent);
    CHECK_THAT(results[i].error, Catch::Contains("'" + messages[i].destination + "'") &&
                                     Catch::Contains("Kafka's internal topics") &&
                                     Catch::Contains("fix the row's destination"));
  }
  CHECK(partition_count(topic) > 0);
  // The refused topic was never asked for, so it was never created. (Only
  // a metadata request for all topics: asking for it by name would create it.)
  rd_kafka_t* rk = metadata_client();
  const rd_kafka_metadata_t* md = nullptr;
  REQUIRE(rd_kafka_metadata(rk, 1, nullptr, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR);
  bool found_topic = false;
  bool found_internal = false;
  for (int i = 0; i < md->topic_cnt; ++i) {
    found_topic = found_topic || topic == md->topics[i].topic;
    found_internal = found_internal || internal == md->topics[i].topic;
  }
  rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  CHECK(found_topic);  // the listing does include what was produced
  CHECK_FALSE(found_internal);
}

TEST_CASE("probe() is true against the running cluster", "[kafka]") {
  auto publisher = kafka::make_publisher(producer_options());
  const auto start = std::chrono::steady_clock::now();
  CHECK(publisher->probe(10s));
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  // Also after the producer has learnt some topics.
  const std::string topic = txbox::test::unique_name("kafka_probe");
  const std::vector<Message> one = {make_message(topic, 0, std::nullopt)};
  require_all_confirmed(publisher->publish(one, 30s), 1);
  CHECK(publisher->probe(10s));
  CHECK(publisher->healthy());
}

TEST_CASE("a message carried by a second batch while its first copy is still queued is stored "
          "once",
          "[kafka]") {
  const std::string topic = txbox::test::unique_name("kafka_attach");
  auto publisher = kafka::make_publisher(producer_options());
  std::vector<Message> messages;
  for (int i = 0; i < 100; ++i) messages.push_back(make_message(topic, i, std::string("one-key")));
  // Same ids and content, started before the first batch can be confirmed.
  auto first = publisher->start(messages);
  auto again = publisher->start(messages);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  require_all_confirmed(first->wait(deadline), messages.size());
  require_all_confirmed(again->wait(deadline), messages.size());

  auto consumer = kafka::make_consumer(consumer_options(topic, txbox::test::unique_name("g")));
  auto deliveries = consume(*consumer, messages.size());
  for (int i = 0; i < 10; ++i) {  // give extra copies a chance to show up
    if (auto d = consumer->poll(200ms)) deliveries.push_back(std::move(*d));
  }
  // Every message once; a message whose first copy was already confirmed
  // when the second batch reached it is sent again (a duplicate, in order).
  std::map<std::string, int> copies;
  for (const auto& d : deliveries) ++copies[d.message.message_id];
  CHECK(copies.size() == messages.size());
  size_t duplicated = 0;
  for (const auto& [id, n] : copies) duplicated += n > 1 ? 1 : 0;
  WARN(duplicated << " of " << messages.size()
                  << " messages were already confirmed when the second batch carried them");
  // One key, one partition: the first occurrences are in publish order.
  std::vector<std::string> first_seen;
  std::set<std::string> seen;
  for (const auto& d : deliveries)
    if (seen.insert(d.message.message_id).second) first_seen.push_back(d.message.message_id);
  REQUIRE(first_seen.size() == messages.size());
  for (size_t i = 0; i < messages.size(); ++i) CHECK(first_seen[i] == messages[i].message_id);
}
