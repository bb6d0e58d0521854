#include "errors.hpp"

#include <fmt/format.h>

#include <functional>
#include <string_view>

namespace txbox::kafka::detail {

using brokers::ErrorClass;
using brokers::PublishResult;

brokers::ErrorClass classify(rd_kafka_resp_err_t err, bool all_brokers_down) noexcept {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:  // INVALID_TOPIC_EXCEPTION
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
      return ErrorClass::permanent;
    // The cluster as a whole cannot be reached or will not talk to us: no
    // message can get through until that changes, so no attempt is counted.
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
      return ErrorClass::outage;
    // A timeout says nothing by itself: with all brokers down it is the
    // outage; with a reachable cluster it is one slow partition or broker.
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
      return all_brokers_down ? ErrorClass::outage : ErrorClass::transient;
    default:
      return ErrorClass::transient;
  }
}

bool is_size_error(rd_kafka_resp_err_t err) noexcept {
  return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
         err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE ||
         err == RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE;
}

std::optional<std::size_t> pick_size_offender(std::span<const std::size_t> bytes) noexcept {
  std::optional<std::size_t> offender;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (!offender || bytes[i] > bytes[*offender]) {
      offender = i;
    }
  }
  return offender;
}

std::optional<std::string> refuse_destination(std::string_view topic) {
  constexpr std::string_view fix =
      "fix the row's destination (txbox.outbox.destination) and replay it";
  if (topic.empty()) {
    return fmt::format(
        "the destination is empty: a Kafka message needs a topic name; {}; retrying cannot help",
        fix);
  }
  if (topic.starts_with("__")) {
    return fmt::format(
        "refusing to publish to topic '{}': names starting with '__' are Kafka's internal topics "
        "(such as __consumer_offsets and __transaction_state) and writing to them corrupts the "
        "cluster's own state; {}; retrying cannot help",
        topic, fix);
  }
  constexpr std::size_t kMaxTopicLength = 249;  // Kafka's Topic.MAX_NAME_LENGTH
  bool legal_characters = true;
  for (const char c : topic) {
    const bool legal = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '-';
    legal_characters = legal_characters && legal;
  }
  if (topic == "." || topic == ".." || topic.size() > kMaxTopicLength || !legal_characters) {
    return fmt::format(
        "'{}' is not a valid Kafka topic name: use 1 to 249 characters of [a-zA-Z0-9._-], not "
        "'.' or '..'; {}; retrying cannot help",
        topic.size() > 300 ? std::string(topic.substr(0, 300)) + "..." : std::string(topic), fix);
  }
  return std::nullopt;
}

std::uint64_t content_fingerprint(const brokers::Message& message) noexcept {
  // Each field hashed whole (std::hash works a word at a time), combined
  // with its length so that field boundaries count ("ab"+"c" differs from
  // "a"+"bc"). Called for every message produced: keep it cheap.
  std::uint64_t hash = 14695981039346656037ull;
  const auto mix = [&hash](std::string_view bytes) {
    const std::uint64_t h = std::hash<std::string_view>{}(bytes) ^ (bytes.size() * 0x9e3779b97f4a7c15ull);
    hash ^= h + 0x9e3779b97f4a7c15ull + (hash << 6) + (hash >> 2);
  };
  mix(message.destination);
  mix(message.key ? std::string_view("k") : std::string_view());
  mix(message.key ? std::string_view(*message.key) : std::string_view());
  mix(message.payload);
  for (const auto& [name, value] : message.headers) {
    mix(name);
    mix(value);
  }
  return hash;
}

std::string describe_publish_error(rd_kafka_resp_err_t err, std::string_view topic,
                                   std::size_t bytes, std::chrono::milliseconds message_timeout) {
  const char* name = rd_kafka_err2name(err);
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
      return fmt::format(
          "message of {} bytes for topic '{}' exceeds the size limit (message.max.bytes of the "
          "producer, message.max.bytes of the broker or max.message.bytes of the topic): make "
          "the payload smaller or raise the limit; retrying cannot help [{}]",
          bytes, topic, name);
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
      return fmt::format(
          "topic '{}' does not exist on the cluster: create it, or enable "
          "auto.create.topics.enable on the broker [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
      return fmt::format(
          "not authorized to write to topic '{}': grant WRITE on the topic to the relay's "
          "principal [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
      return fmt::format(
          "not authorized on the cluster (the idempotent producer needs IDEMPOTENT_WRITE): grant "
          "it to the relay's principal, or set the property enable.idempotence=false [{}]",
          name);
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
      return fmt::format(
          "'{}' is not a valid topic name: use at most 249 characters of [a-zA-Z0-9._-] [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
      return fmt::format(
          "the broker rejected the record for topic '{}' as invalid (e.g. a compacted topic "
          "needs a key): fix the message [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return fmt::format("librdkafka rejected the message for topic '{}' as invalid: {} [{}]",
                         topic, rd_kafka_err2str(err), name);
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
      return fmt::format(
          "not delivered to topic '{}' within message.timeout.ms ({} ms): the broker is "
          "unreachable or slow; will be retried (a message.timeout.ms other than 0 lets later "
          "messages of its partition overtake it) [{}]",
          topic, message_timeout.count(), name);
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      return fmt::format(
          "the local producer queue (queue.buffering.max.messages / queue.buffering.max.kbytes) "
          "stayed full: the brokers are slower than the relay or unreachable; publish smaller "
          "batches or raise those properties; will be retried [{}]",
          name);
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
      return fmt::format(
          "the Kafka producer was recreated or shut down before the broker confirmed the "
          "message for topic '{}'; will be retried [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR__FATAL:
      return fmt::format(
          "the Kafka producer hit a fatal error and is being recreated (see the log) before "
          "the message for topic '{}' was confirmed; will be retried [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
      return fmt::format(
          "could not reach the Kafka brokers ({}): check bootstrap.servers and the network; "
          "will be retried once they are reachable [{}]",
          rd_kafka_err2str(err), name);
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
      return fmt::format(
          "the Kafka brokers refused the relay's credentials ({}): fix the security.protocol / "
          "sasl.* properties; will be retried once they are accepted [{}]",
          rd_kafka_err2str(err), name);
    default:
      return fmt::format(
          "publishing to topic '{}' failed: {}; {} [{}]", topic, rd_kafka_err2str(err),
          classify(err) == ErrorClass::permanent ? "retrying cannot help" : "will be retried",
          name);
  }
}

PublishResult size_rejection_result(rd_kafka_resp_err_t err, std::string_view topic,
                                    std::size_t bytes, bool offender, std::size_t offender_bytes) {
  if (offender) {
    return PublishResult{false, ErrorClass::permanent,
                         describe_publish_error(err, topic, bytes, std::chrono::milliseconds(0))};
  }
  return PublishResult{
      false, ErrorClass::transient,
      fmt::format("the broker rejected this message of {} bytes for topic '{}' together with an "
                  "oversized message ({} bytes) that shared its MessageSet: failed together with "
                  "an oversized message; will be retried [{}]",
                  bytes, topic, offender_bytes, rd_kafka_err2name(err))};
}

PublishResult no_report_result(std::string_view topic, std::chrono::milliseconds waited,
                               bool all_brokers_down) {
  if (all_brokers_down) {
    return PublishResult{
        false, ErrorClass::outage,
        fmt::format("no delivery report from Kafka within the publish timeout of {} ms (topic "
                    "'{}'): all brokers are unreachable; the message stays queued in the "
                    "producer and goes out when they are back; will be retried",
                    waited.count(), topic)};
  }
  return PublishResult{
      false, ErrorClass::transient,
      fmt::format("no delivery report from Kafka within the publish timeout of {} ms (topic '{}'): "
                  "the broker is slow or the partition has no leader; the message stays queued "
                  "in the producer in its place; will be retried",
                  waited.count(), topic)};
}

bool consumer_error_is_fatal(rd_kafka_resp_err_t err) noexcept {
  switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
      return true;
    default:
      return false;
  }
}

}  // namespace txbox::kafka::detail
