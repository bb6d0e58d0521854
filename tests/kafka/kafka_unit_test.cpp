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
#include "order_barrier.hpp"
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

// `holds` is true for each error of `holding` and false for each of `not_holding`.
template <typename Predicate>
void check_holds_exactly_for(Predicate holds, std::initializer_list<rd_kafka_resp_err_t> holding,
                             std::initializer_list<rd_kafka_resp_err_t> not_holding) {
  for (auto err : holding) {
    INFO(rd_kafka_err2name(err));
    CHECK(holds(err));
  }
  for (auto err : not_holding) {
    INFO(rd_kafka_err2name(err));
    CHECK_FALSE(holds(err));
  }
}

// `count` messages "<id_prefix><i>" to the topic "unreachable", payload "p".
std::vector<Message> unreachable_messages(size_t count, const std::string& id_prefix) {
  std::vector<Message> messages(count);
  for (size_t i = 0; i < messages.size(); ++i) {
    messages[i].message_id = id_prefix + std::to_string(i);
    messages[i].destination = "unreachable";
    messages[i].payload = "p";
  }
  return messages;
}

// `result` is a failure of `error_class` whose error matches `says`.
template <typename Matcher>
void check_failure(const txbox::brokers::PublishResult& result, ErrorClass error_class, const Matcher& says) {
  CHECK_FALSE(result.confirmed);
  CHECK(result.error_class == error_class);
  CHECK_THAT(result.error, says);
}

// There are `count` results, each a failure of `error_class` whose error
// says `says`.
void require_all_failed(const std::vector<txbox::brokers::PublishResult>& results, size_t count,
                        ErrorClass error_class, const std::string& says) {
  REQUIRE(results.size() == count);
  for (const auto& r : results) {
    INFO(r.error);
    check_failure(r, error_class, Catch::Contains(says));
  }
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
  CHECK_THROWS_AS(kafka::murmur2_partition("x", 0), txbox::UsageError);
  CHECK_THROWS_AS(kafka::murmur2_partition("x", -3), txbox::UsageError);
}

TEST_CASE("librdkafka errors are classified permanent, transient or outage", "[kafka][unit]") {
  for (rd_kafka_resp_err_t err :
       {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION,
        RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_RECORD,
        RD_KAFKA_RESP_ERR__INVALID_ARG, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC}) {
    INFO(rd_kafka_err2name(err));
    CHECK(detail::classify(err) == ErrorClass::permanent);
    CHECK(detail::classify(err, /*all_brokers_down=*/true) == ErrorClass::permanent);
  }
  // The cluster as a whole is unreachable or refuses us, whatever the
  // producer believed before.
  for (rd_kafka_resp_err_t err :
       {RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
        RD_KAFKA_RESP_ERR__RESOLVE, RD_KAFKA_RESP_ERR__AUTHENTICATION,
        RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED}) {
    INFO(rd_kafka_err2name(err));
    CHECK(detail::classify(err) == ErrorClass::outage);
    CHECK(detail::classify(err, true) == ErrorClass::outage);
  }
  // Timeouts: an outage while all brokers are down, transient otherwise.
  for (rd_kafka_resp_err_t err :
       {RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR__TIMED_OUT,
        RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT}) {
    INFO(rd_kafka_err2name(err));
    CHECK(detail::classify(err) == ErrorClass::transient);
    CHECK(detail::classify(err, true) == ErrorClass::outage);
  }
  for (rd_kafka_resp_err_t err :
       {RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR__QUEUE_FULL, RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
        RD_KAFKA_RESP_ERR__PURGE_QUEUE, RD_KAFKA_RESP_ERR__PURGE_INFLIGHT, RD_KAFKA_RESP_ERR__FATAL,
        RD_KAFKA_RESP_ERR__GAPLESS_GUARANTEE, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION}) {
    INFO(rd_kafka_err2name(err));
    CHECK(detail::classify(err) == ErrorClass::transient);
    CHECK(detail::classify(err, true) == ErrorClass::transient);
  }
}

TEST_CASE("size errors: the largest message of a rejected MessageSet is the offender",
          "[kafka][unit]") {
  check_holds_exactly_for(detail::is_size_error,
                          {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
                           RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE},
                          {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT});

  using Sizes = std::vector<std::size_t>;
  CHECK_FALSE(detail::pick_size_offender(Sizes{}).has_value());
  CHECK(detail::pick_size_offender(Sizes{700}) == 0u);
  CHECK(detail::pick_size_offender(Sizes{120, 130, 2000000, 125}) == 2u);
  CHECK(detail::pick_size_offender(Sizes{2000000, 10, 10}) == 0u);
  CHECK(detail::pick_size_offender(Sizes{10, 10, 2000000}) == 2u);
  // Two equally large: exactly one (the first) is the offender; the other is
  // retried and, if it is too large on its own, fails alone next time.
  CHECK(detail::pick_size_offender(Sizes{5, 900, 900, 7}) == 1u);

  const auto offender = detail::size_rejection_result(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
                                                      "orders", 2000000, true, 2000000);
  check_failure(offender, ErrorClass::permanent,
                Catch::Contains("2000000 bytes") && Catch::Contains("make the payload smaller or raise the limit") &&
                    Catch::Contains("retrying cannot help"));
  const auto innocent = detail::size_rejection_result(RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
                                                      "orders", 120, false, 2000000);
  check_failure(innocent, ErrorClass::transient,
                Catch::Contains("failed together with an oversized message") && Catch::Contains("2000000 bytes") &&
                    Catch::Contains("will be retried") && Catch::Contains("RECORD_LIST_TOO_LARGE"));
}

TEST_CASE("destinations addressing Kafka's internals or invalid names are refused",
          "[kafka][unit]") {
  for (const char* topic : {"__consumer_offsets", "__transaction_state", "__", "__anything"}) {
    INFO(topic);
    const auto reason = detail::refuse_destination(topic);
    REQUIRE(reason.has_value());
    CHECK_THAT(*reason, Catch::Contains(std::string("'") + topic + "'") &&
                            Catch::Contains("names starting with '__'") &&
                            Catch::Contains("fix the row's destination") &&
                            Catch::Contains("retrying cannot help"));
  }
  const auto empty = detail::refuse_destination("");
  REQUIRE(empty.has_value());
  CHECK_THAT(*empty, Catch::Contains("empty") && Catch::Contains("fix the row's destination"));
  for (const std::string& topic : {std::string("."), std::string(".."), std::string("has space"),
                                  std::string("orders/created"), std::string("caf\xc3\xa9"),
                                  std::string(250, 'a')}) {
    INFO(topic);
    const auto reason = detail::refuse_destination(topic);
    REQUIRE(reason.has_value());
    CHECK_THAT(*reason, Catch::Contains("not a valid Kafka topic name"));
  }
  for (const std::string& topic :
       {std::string("orders"), std::string("_single_underscore"), std::string("a.b-c_D9"),
        std::string("x__y"), std::string(249, 'a'), std::string("...")}) {
    INFO(topic);
    CHECK_FALSE(detail::refuse_destination(topic).has_value());
  }
}

TEST_CASE("a content fingerprint tells a re-publication from a different message with the same id",
          "[kafka][unit]") {
  Message m;
  m.message_id = "id-1";
  m.destination = "orders";
  m.key = "k";
  m.payload = "payload";
  m.headers = {{"a", "1"}};
  const auto base = detail::content_fingerprint(m);
  Message same = m;
  same.message_id = "another id";  // the id is compared separately
  CHECK(detail::content_fingerprint(same) == base);
  auto differs = [&](auto change) {
    Message other = m;
    change(other);
    return detail::content_fingerprint(other) != base;
  };
  CHECK(differs([](Message& o) { o.destination = "orders2"; }));
  CHECK(differs([](Message& o) { o.key.reset(); }));
  CHECK(differs([](Message& o) { o.key = ""; }));
  CHECK(differs([](Message& o) { o.payload = "payloaD"; }));
  CHECK(differs([](Message& o) { o.headers.clear(); }));
  CHECK(differs([](Message& o) { o.headers = {{"a", "2"}}; }));
  // Field boundaries count.
  CHECK(differs([](Message& o) { o.destination = "orde"; o.key = "rsk"; }));
}

TEST_CASE("after a loss, new batches wait until every batch started before it is settled",
          "[kafka][unit]") {
  detail::OrderBarrier barrier;
  CHECK_FALSE(barrier.refusal().has_value());
  const auto a = barrier.start_batch();
  const auto b = barrier.start_batch();
  CHECK(a != b);
  CHECK(a > 0);
  // Without a loss, batches in flight never hold anything back.
  CHECK_FALSE(barrier.refusal().has_value());

  barrier.note_loss("the producer was recreated after the fatal error _GAPLESS_GUARANTEE");
  auto refusal = barrier.refusal();
  REQUIRE(refusal.has_value());
  CHECK_THAT(*refusal, Catch::Contains("not sent") && Catch::Contains("earlier batch") &&
                           Catch::Contains("_GAPLESS_GUARANTEE") &&
                           Catch::Contains("will be retried"));
  barrier.settle_batch(b);  // in any order
  CHECK(barrier.refusal().has_value());
  barrier.settle_batch(a);
  CHECK_FALSE(barrier.refusal().has_value());  // lifted

  // A batch started after a loss does not hold back others for it.
  const auto c = barrier.start_batch();
  barrier.note_loss("QUEUE_FULL at produce()");
  const auto d = barrier.start_batch();  // a batch that started anyway (it was under way)
  CHECK(barrier.refusal().has_value());
  barrier.settle_batch(c);
  CHECK_FALSE(barrier.refusal().has_value());  // d started after the loss
  barrier.settle_batch(d);
  barrier.settle_batch(d);  // settling twice is harmless
  CHECK(barrier.unsettled() == 0);

  // A loss with nothing in flight holds nothing back.
  barrier.note_loss("nothing in flight");
  CHECK_FALSE(barrier.refusal().has_value());
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
  CHECK_THAT(detail::describe_publish_error(RD_KAFKA_RESP_ERR__PURGE_INFLIGHT, "t", 10, 0ms),
             Catch::Contains("recreated") && Catch::Contains("will be retried"));
  CHECK_THAT(detail::describe_publish_error(RD_KAFKA_RESP_ERR__FATAL, "t", 10, 0ms),
             Catch::Contains("fatal error") && Catch::Contains("recreated") &&
                 Catch::Contains("will be retried"));
  CHECK_THAT(detail::describe_publish_error(RD_KAFKA_RESP_ERR__QUEUE_FULL, "t", 10, 0ms),
             Catch::Contains("queue.buffering.max.messages") && Catch::Contains("will be retried"));

  const auto slow = detail::no_report_result("orders", 2000ms, false);
  CHECK(slow.error_class == ErrorClass::transient);
  CHECK_THAT(slow.error, Catch::Contains("publish timeout of 2000 ms") &&
                             Catch::Contains("'orders'") && Catch::Contains("stays queued") &&
                             Catch::Contains("will be retried"));
  const auto down = detail::no_report_result("orders", 2000ms, true);
  CHECK(down.error_class == ErrorClass::outage);
  CHECK_THAT(down.error, Catch::Contains("all brokers are unreachable") &&
                             Catch::Contains("will be retried"));
}

TEST_CASE("consumer errors: fatal ones are distinguished from informational ones",
          "[kafka][unit]") {
  check_holds_exactly_for(detail::consumer_error_is_fatal,
                          {RD_KAFKA_RESP_ERR__FATAL, RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
                           RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED},
                          {RD_KAFKA_RESP_ERR__PARTITION_EOF, RD_KAFKA_RESP_ERR__TRANSPORT,
                           RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN});
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

TEST_CASE("publishing to an unreachable cluster: no report is transient, then an outage once "
          "all brokers are known to be down, probe() is false",
          "[kafka][unit]") {
  using namespace std::chrono_literals;
  kafka::ProducerOptions options;
  options.bootstrap_servers = "127.0.0.1:1";  // nothing listens there
  auto publisher = kafka::make_publisher(options);

  auto messages = unreachable_messages(3, "id-");
  // message.timeout.ms is infinite: only the publish deadline ends the wait.
  const auto start = std::chrono::steady_clock::now();
  auto results = publisher->publish(messages, 300ms);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  REQUIRE(results.size() == 3);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK((r.error_class == ErrorClass::transient || r.error_class == ErrorClass::outage));
    CHECK_THAT(r.error, Catch::Contains("publish timeout of 300 ms") &&
                            Catch::Contains("stays queued"));
  }
  // librdkafka reports all brokers down after its first connection attempts.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (publisher->healthy() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE_FALSE(publisher->healthy());
  CHECK_FALSE(publisher->probe(300ms));

  // The same messages again (they are still queued: attached, not copied),
  // now reported as an outage.
  results = publisher->publish(messages, 300ms);
  require_all_failed(results, 3, ErrorClass::outage, "all brokers are unreachable");
  CHECK_FALSE(publisher->healthy());
  CHECK(publisher->publish({}, 1s).empty());
}

TEST_CASE("a message.timeout.ms set by the user still times messages out, as an outage while "
          "all brokers are down",
          "[kafka][unit]") {
  using namespace std::chrono_literals;
  kafka::ProducerOptions options;
  options.bootstrap_servers = "127.0.0.1:1";
  options.message_timeout = 1500ms;
  auto publisher = kafka::make_publisher(options);
  const auto messages = unreachable_messages(2, "timeout-");
  const auto results = publisher->publish(messages, 20s);
  require_all_failed(results, 2, ErrorClass::outage, "message.timeout.ms (1500 ms)");
}

TEST_CASE("a destination addressing Kafka's internals fails permanently without a broker",
          "[kafka][unit]") {
  using namespace std::chrono_literals;
  kafka::ProducerOptions options;
  options.bootstrap_servers = "127.0.0.1:1";
  auto publisher = kafka::make_publisher(options);
  std::vector<Message> messages(3);
  messages[0].destination = "__consumer_offsets";
  messages[1].destination = "";
  messages[2].destination = "__transaction_state";
  for (size_t i = 0; i < messages.size(); ++i) messages[i].message_id = "m" + std::to_string(i);
  const auto start = std::chrono::steady_clock::now();
  const auto results = publisher->start(messages)->wait(start + 30s);
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // not waiting for any report
  require_all_failed(results, 3, ErrorClass::permanent, "fix the row's destination");
}

TEST_CASE("the producer defaults: infinite message timeout, gapless guarantee, overridable",
          "[kafka][unit]") {
  using namespace std::chrono_literals;
  const kafka::ProducerOptions defaults;
  CHECK(defaults.message_timeout == 0ms);
  CHECK(defaults.linger == 1ms);
  // librdkafka accepts the experimental gapless guarantee with idempotence
  // (make_publisher would throw otherwise), and every default can be overridden.
  kafka::ProducerOptions options;
  options.bootstrap_servers = "127.0.0.1:1";
  CHECK_NOTHROW(kafka::make_publisher(options));
  options.properties = {{"enable.gapless.guarantee", "false"},
                        {"message.timeout.ms", "30000"},
                        {"linger.ms", "5"}};
  CHECK_NOTHROW(kafka::make_publisher(options));
  options.properties = {{"enable.idempotence", "false"}, {"enable.gapless.guarantee", "false"}};
  CHECK_NOTHROW(kafka::make_publisher(options));
  // Without idempotence the gapless guarantee cannot be kept: librdkafka refuses.
  options.properties = {{"enable.idempotence", "false"}};
  CHECK_THROWS_WITH(kafka::make_publisher(options), Catch::Contains("enable.gapless.guarantee"));
}
