#pragma once
// Kafka adapter for txbox, built on librdkafka. The public API exposes only
// the broker-neutral interface; librdkafka handles stay inside the library.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/brokers/broker.hpp"

namespace txbox::kafka {

struct ProducerOptions {
  std::string bootstrap_servers;                     // host:port,host:port
  std::string compression = "none";                  // none|gzip|snappy|lz4|zstd
  std::chrono::milliseconds linger{5};               // linger.ms
  std::chrono::milliseconds message_timeout{30000};  // message.timeout.ms
  brokers::Properties properties;  // extra librdkafka properties, applied last (override)
};

// Idempotent producer (enable.idempotence=true, acks=all) with the
// Java-compatible partitioner (murmur2 for keyed messages, random for null
// keys). Each message is sent to topic = destination, with the
// `message-id` header added. publish() is thread-safe; healthy() turns false
// when librdkafka reports that all brokers are down and true again after the
// next successful delivery.
// Throws brokers::BrokerError on bad configuration, naming the property and
// librdkafka's reason.
std::unique_ptr<brokers::Publisher> make_publisher(const ProducerOptions& options);

struct ConsumerOptions {
  std::string bootstrap_servers;
  std::string group_id;
  std::vector<std::string> topics;
  std::string auto_offset_reset = "earliest";        // earliest|latest
  std::chrono::milliseconds session_timeout{10000};  // session.timeout.ms
  brokers::Properties properties;                    // extra librdkafka properties, applied last
};

// High-level balanced consumer (consumer group), no auto commit: ack()
// synchronously commits offset+1 of the delivery's partition.
// Throws brokers::BrokerError on bad configuration or a failed subscribe.
std::unique_ptr<brokers::Consumer> make_consumer(const ConsumerOptions& options);

// Java-client-compatible partition for a key: (murmur2(key) & 0x7fffffff) %
// partition_count, with Kafka's Utils.murmur2 (seed 0x9747b28c). This is
// where the producer puts a keyed message. partition_count must be > 0.
int32_t murmur2_partition(std::string_view key, int32_t partition_count);

}  // namespace txbox::kafka
