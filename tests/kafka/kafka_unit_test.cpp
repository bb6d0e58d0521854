// Kafka adapter tests that need no server: Java-compatible partitioning,
// error classification, configuration errors, unreachable brokers.

#include <librdkafka/rdkafka.h>

#include <catch2/catch.hpp>
#include <climits>
#include <cstdint>
#include <random>
#include <string>
#include <thread>

#include "errors.hpp"
#include "txbox/kafka/kafka.hpp"

using txbox::brokers::BrokerError;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;
namespace kafka = txbox::kafka;
namespace detail = txbox::kafka::detail;

namespace {

// The positive murmur2 value, as Java computes Utils.toPositive(murmur2(key)).
uint32_t positive(int32_t java_murmur2) {
  return static_cast<uint32_t>(java_murmur2) & 0x7fffffffu;
}

}  // namespace

TEST_CASE("murmur2_partition matches Kafka's Java Utils.murmur2 test vectors", "[kafka][unit]") {
  // From org.apache.kafka.common.utils.UtilsTest#testMurmur2.
  const std::vector<std::pair<std::string, int32_t>> cases = {
      {"21", -973932308},
      {"foobar", -790332482},
      {"a-little-bit-long-string", -985981536},
      {"a-little-bit-longer-string", -1486304829},
      {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
      {"abc", 479470107},
  };
  for (const auto& [key, java] : cases) {
    INFO("key " << key);
    // With INT32_MAX partitions the partition is the positive hash itself.
    CHECK(static_cast<uint32_t>(kafka::murmur2_partition(key, INT32_MAX)) == positive(java));
    for (int32_t partitions : {1, 3, 4, 12, 100}) {
      CHECK(kafka::murmur2_partition(key, partitions) ==
            static_cast<int32_t>(positive(java) % partitions));
    }
  }
  CHECK(kafka::murmur2_partition("21", 4) == 0);      // 1173551340 % 4
  CHECK(kafka::murmur2_partition("abc", 4) == 3);     // 479470107 % 4
  CHECK(kafka::murmur2_partition("foobar", 3) == 0);  // 1357151166 % 3
}

TEST_CASE("murmur2_partition agrees with librdkafka's murmur2 partitioner", "[kafka][unit]") {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> len(0, 64);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 2000; ++i) {
    std::string key(static_cast<size_t>(len(rng)), '\0');
    for (auto& c : key) {
      c = static_cast<char>(byte(rng));
    }
    for (int32_t partitions : {1, 4, 7, 64}) {
      REQUIRE(kafka::murmur2_partition(key, partitions) ==
              rd_kafka_msg_partitioner_murmur2(nullptr, key.data(), key.size(), partitions, nullptr,
                                               nullptr));
    }
  }
}

TEST_CASE("murmur2_partition rejects a non-positive partition count", "[kafka][unit]") {
  CHECK_THROWS_AS(kafka::murmur2_partition("x", 0), std::invalid_argument);
  CHECK_THROWS_AS(kafka::murmur2_partition("x", -3), std::invalid_argument);
}

TEST_CASE("librdkafka errors are classified permanent or transient", "[kafka][unit]") {
  for (rd_kafka_resp_err_t err :
       {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION,
        RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_RECORD,
        RD_KAFKA_RESP_ERR__INVALID_ARG, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC}) {
    INFO(rd_kafka_err2name(err));
    CHECK(detail::classify(err) == ErrorClass::permanent);
  }
  for (rd_kafka_resp_err_t err :
       {RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__QUEUE_FULL,
        RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION, RD_KAFKA_RESP_ERR__PURGE_QUEUE,
        RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION}) {
    INFO(rd_kafka_err2name(err));
    CHECK(detail::classify(err) == ErrorClass::transient);
  }
}

TEST_CASE("publish error messages say what happened and what to do", "[kafka][unit]") {
  using namespace std::chrono_literals;
  const std::string too_large = detail::describe_publish_error(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
                                                               "orders", 2000000, 30000ms);
  CHECK_THAT(too_large, Catch::Contains("2000000 bytes") && Catch::Contains("message.max.bytes") &&
                            Catch::Contains("make the payload smaller or raise the limit"));
  CHECK_THAT(detail::describe_publish_error(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, "orders", 10, 1234ms),
             Catch::Contains("message.timeout.ms (1234 ms)") && Catch::Contains("retried"));
  CHECK_THAT(
      detail::describe_publish_error(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, "nope", 10, 1000ms),
      Catch::Contains("'nope' does not exist") && Catch::Contains("create it"));
  CHECK_THAT(
      detail::describe_publish_error(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, "t", 10, 1000ms),
      Catch::Contains("grant WRITE"));
}

TEST_CASE("consumer errors: fatal ones are distinguished from informational ones",
          "[kafka][unit]") {
  CHECK(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR__FATAL));
  CHECK(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED));
  CHECK(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED));
  CHECK_FALSE(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR__PARTITION_EOF));
  CHECK_FALSE(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR__TRANSPORT));
  CHECK_FALSE(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
  CHECK_FALSE(detail::consumer_error_is_fatal(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN));
}

TEST_CASE("bad producer and consumer configuration throws BrokerError naming the property",
          "[kafka][unit]") {
  kafka::ProducerOptions producer;
  producer.bootstrap_servers = "127.0.0.1:1";

  SECTION("unknown passthrough property") {
    producer.properties["no.such.property"] = "1";
    try {
      (void)kafka::make_publisher(producer);
      FAIL("expected BrokerError");
    } catch (const BrokerError& e) {
      CHECK_THAT(e.what(), Catch::Contains("no.such.property") &&
                               Catch::Contains("ProducerOptions::properties"));
      CHECK_FALSE(e.retryable());
    }
  }
  SECTION("invalid compression") {
    producer.compression = "bogus";
    try {
      (void)kafka::make_publisher(producer);
      FAIL("expected BrokerError");
    } catch (const BrokerError& e) {
      CHECK_THAT(e.what(), Catch::Contains("compression.codec") && Catch::Contains("bogus") &&
                               Catch::Contains("ProducerOptions::compression"));
    }
  }
  SECTION("combination rejected by rd_kafka_new") {
    producer.properties["acks"] = "1";  // conflicts with enable.idempotence=true
    try {
      (void)kafka::make_publisher(producer);
      FAIL("expected BrokerError");
    } catch (const BrokerError& e) {
      CHECK_THAT(e.what(), Catch::Contains("acks"));
    }
  }
  SECTION("missing bootstrap servers") {
    producer.bootstrap_servers.clear();
    CHECK_THROWS_WITH(kafka::make_publisher(producer), Catch::Contains("bootstrap_servers"));
  }
  SECTION("consumer: bad passthrough value") {
    kafka::ConsumerOptions consumer;
    consumer.bootstrap_servers = "127.0.0.1:1";
    consumer.group_id = "g";
    consumer.topics = {"t"};
    consumer.properties["fetch.wait.max.ms"] = "not-a-number";
    CHECK_THROWS_WITH(kafka::make_consumer(consumer), Catch::Contains("fetch.wait.max.ms"));
    consumer.properties.clear();
    consumer.auto_offset_reset = "sideways";
    CHECK_THROWS_WITH(kafka::make_consumer(consumer), Catch::Contains("auto.offset.reset"));
    consumer.auto_offset_reset = "earliest";
    consumer.topics.clear();
    CHECK_THROWS_WITH(kafka::make_consumer(consumer), Catch::Contains("topics"));
  }
}

TEST_CASE(
    "publishing to an unreachable cluster fails transiently and marks the publisher unhealthy",
    "[kafka][unit]") {
  using namespace std::chrono_literals;
  kafka::ProducerOptions options;
  options.bootstrap_servers = "127.0.0.1:1";  // nothing listens there
  options.message_timeout = 1500ms;
  auto publisher = kafka::make_publisher(options);
  CHECK(publisher->healthy());

  std::vector<Message> messages(3);
  for (size_t i = 0; i < messages.size(); ++i) {
    messages[i].message_id = "id-" + std::to_string(i);
    messages[i].destination = "unreachable";
    messages[i].payload = "p";
  }
  // Publish timeout shorter than message.timeout.ms: no report in time.
  auto results = publisher->publish(messages, 300ms);
  REQUIRE(results.size() == 3);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::transient);
    CHECK_THAT(r.error, Catch::Contains("publish timeout"));
  }
  // Publish timeout longer than message.timeout.ms: librdkafka times them out.
  results = publisher->publish(messages, 10s);
  REQUIRE(results.size() == 3);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::transient);
    CHECK_THAT(r.error, Catch::Contains("message.timeout.ms"));
  }
  CHECK_FALSE(publisher->healthy());
  CHECK(publisher->publish({}, 1s).empty());
}
