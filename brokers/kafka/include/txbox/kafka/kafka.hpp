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
#include "txbox/brokers/url.hpp"

namespace txbox::kafka {

struct ProducerOptions {
  std::string bootstrap_servers;     // host:port,host:port
  std::string compression = "none";  // none|gzip|snappy|lz4|zstd
  // linger.ms: how long librdkafka waits for more messages before sending a
  // MessageSet. 1 ms adds about 1 ms to a lone message and sends a 500-message
  // batch as one MessageSet per partition (measured: docs/brokers/kafka.md);
  // librdkafka's 5 ms would take the relay's whole latency budget.
  std::chrono::milliseconds linger{1};
  // message.timeout.ms. 0 = never: librdkafka keeps a message queued in its
  // place until the broker takes it, so a later message of its partition can
  // never be stored while an earlier one was dropped. The publish deadline
  // given to PendingPublish::wait() only stops the waiting. Any other value
  // lets librdkafka fail queued messages while later ones go on (gaps).
  std::chrono::milliseconds message_timeout{0};
  // How long start() waits for room when librdkafka's local queue is full
  // (queue.buffering.max.messages / .kbytes); then the message and the rest
  // of its batch fail transiently without being queued.
  std::chrono::milliseconds enqueue_timeout{1000};
  brokers::Properties properties;  // extra librdkafka properties, applied last (override)
};

// Idempotent producer (enable.idempotence=true, acks=all,
// enable.gapless.guarantee=true, message.timeout.ms=0) with the
// Java-compatible partitioner (murmur2 for keyed messages, random for null
// keys). Each message is sent to topic = destination, with the `message-id`
// header added. One producer is shared by every caller; start() and probe()
// are thread-safe and several batches may be in flight at once.
//
// - A message whose id and content are still queued in the producer (an
//   earlier copy whose wait() gave up) is not produced again: the new batch
//   waits for the delivery report of that copy.
// - Topics starting with "__" (Kafka's internal topics), the empty name and
//   names Kafka would reject fail permanently without being produced.
// - A fatal producer error (e.g. ERR__GAPLESS_GUARANTEE) recreates the
//   librdkafka producer (one log line); the messages it held fail
//   transiently, and new batches are refused (transiently) until every batch
//   started before the error was waited for, so nothing overtakes them.
// - healthy() turns false when librdkafka reports that all brokers are down
//   and true again after the next delivery or successful probe().
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

// What brokers::open_publisher() / open_consumer() call for kafka:// URLs:
// bootstrap servers from the hosts (default port 9092), ?compression=CODEC,
// the properties as librdkafka properties.
std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties);
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription);

}  // namespace txbox::kafka
