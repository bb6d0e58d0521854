#pragma once
// Private: RAII owners for librdkafka C handles and configuration helpers
// shared by the producer and the consumer.

#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>
#include <string_view>

namespace txbox::kafka::detail {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const noexcept { rd_kafka_destroy(rk); }
};
struct ConfDeleter {
  void operator()(rd_kafka_conf_t* conf) const noexcept { rd_kafka_conf_destroy(conf); }
};
struct HeadersDeleter {
  void operator()(rd_kafka_headers_t* headers) const noexcept { rd_kafka_headers_destroy(headers); }
};
struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* list) const noexcept {
    rd_kafka_topic_partition_list_destroy(list);
  }
};
struct MessageDeleter {
  void operator()(rd_kafka_message_t* message) const noexcept { rd_kafka_message_destroy(message); }
};

using KafkaPtr = std::unique_ptr<rd_kafka_t, KafkaDeleter>;
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;
using HeadersPtr = std::unique_ptr<rd_kafka_headers_t, HeadersDeleter>;
using PartitionListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;
using MessagePtr = std::unique_ptr<rd_kafka_message_t, MessageDeleter>;

// rd_kafka_conf_set; throws brokers::BrokerError (not retryable) naming the
// property, the value, where it came from (`origin`, e.g.
// "ProducerOptions::compression" or "producer properties") and librdkafka's
// reason.
void set_property(rd_kafka_conf_t* conf, const std::string& name, const std::string& value,
                  std::string_view origin);

// Routes librdkafka's log lines to spdlog (syslog level -> spdlog level).
void install_log_callback(rd_kafka_conf_t* conf);

// rd_kafka_new; throws brokers::BrokerError with librdkafka's reason. Takes
// ownership of `conf` (also on failure).
KafkaPtr create_client(rd_kafka_type_t type, ConfPtr conf, std::string_view what);

}  // namespace txbox::kafka::detail
