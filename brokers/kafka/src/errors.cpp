#include "errors.hpp"

#include <fmt/format.h>

namespace txbox::kafka::detail {

brokers::ErrorClass classify(rd_kafka_resp_err_t err) noexcept {
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
      return brokers::ErrorClass::permanent;
    default:
      return brokers::ErrorClass::transient;
  }
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
          "producer, "
          "message.max.bytes of the broker or max.message.bytes of the topic): make the payload "
          "smaller "
          "or raise the limit [{}]",
          bytes, topic, name);
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
      return fmt::format(
          "topic '{}' does not exist on the cluster: create it, or enable "
          "auto.create.topics.enable on "
          "the broker [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
      return fmt::format(
          "not authorized to write to topic '{}': grant WRITE on the topic to the relay's "
          "principal [{}]",
          topic, name);
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
      return fmt::format(
          "not authorized on the cluster (the idempotent producer needs IDEMPOTENT_WRITE): grant "
          "it to "
          "the relay's principal, or set the property enable.idempotence=false [{}]",
          name);
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
      return fmt::format(
          "'{}' is not a valid topic name: use at most 249 characters of [a-zA-Z0-9._-] "
          "[{}]",
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
          "unreachable or "
          "slow; will be retried [{}]",
          topic, message_timeout.count(), name);
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      return fmt::format(
          "the local producer queue stayed full (queue.buffering.max.messages / "
          "queue.buffering.max.kbytes) until the publish timeout: publish smaller batches or raise "
          "those "
          "properties; will be retried [{}]",
          name);
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
      return fmt::format(
          "the publisher shut down before the broker confirmed the message; will be "
          "retried [{}]",
          name);
    case RD_KAFKA_RESP_ERR__FATAL:
      return fmt::format(
          "the producer hit a fatal error and must be recreated (restart the relay) [{}]", name);
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
      return fmt::format(
          "could not reach the Kafka brokers ({}): check bootstrap.servers and the network; "
          "will be retried [{}]",
          rd_kafka_err2str(err), name);
    default:
      return fmt::format("publishing to topic '{}' failed: {}; {} [{}]", topic,
                         rd_kafka_err2str(err),
                         classify(err) == brokers::ErrorClass::permanent ? "retrying cannot help"
                                                                         : "will be retried",
                         name);
  }
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
