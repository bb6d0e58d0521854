// Kafka consumer: librdkafka high-level balanced consumer (consumer group)
// with manual, synchronous offset commits.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <map>
#include <mutex>

#include "errors.hpp"
#include "handles.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/kafka/kafka.hpp"

namespace txbox::kafka {

namespace {

using namespace detail;
using brokers::Delivery;

class KafkaConsumer final : public brokers::Consumer {
 public:
  explicit KafkaConsumer(const ConsumerOptions& options) : group_id_(options.group_id) {
    if (options.bootstrap_servers.empty() && !options.properties.contains("bootstrap.servers")) {
      throw brokers::BrokerError(
          ErrorKind::config,
          "ConsumerOptions::bootstrap_servers is empty: set it to host:port[,host:port...]");
    }
    if (options.group_id.empty() && !options.properties.contains("group.id")) {
      throw brokers::BrokerError(ErrorKind::config,
                                 "ConsumerOptions::group_id is empty: set the consumer group name");
    }
    if (options.topics.empty()) {
      throw brokers::BrokerError(
          ErrorKind::config,
          "ConsumerOptions::topics is empty: list at least one topic to subscribe to");
    }
    ConfPtr conf(rd_kafka_conf_new());
    if (!options.bootstrap_servers.empty()) {
      set_property(conf.get(), "bootstrap.servers", options.bootstrap_servers,
                   "ConsumerOptions::bootstrap_servers");
    }
    if (!options.group_id.empty()) {
      set_property(conf.get(), "group.id", options.group_id, "ConsumerOptions::group_id");
    }
    set_property(conf.get(), "enable.auto.commit", "false", "txbox consumer defaults");
    set_property(conf.get(), "enable.auto.offset.store", "false", "txbox consumer defaults");
    set_property(conf.get(), "log.connection.close", "false", "txbox consumer defaults");
    set_property(conf.get(), "auto.offset.reset", options.auto_offset_reset,
                 "ConsumerOptions::auto_offset_reset");
    set_property(conf.get(), "session.timeout.ms", std::to_string(options.session_timeout.count()),
                 "ConsumerOptions::session_timeout");
    for (const auto& [name, value] : options.properties) {
      set_property(conf.get(), name, value, "ConsumerOptions::properties");
    }
    if (auto it = options.properties.find("group.id"); it != options.properties.end()) {
      group_id_ = it->second;
    }
    install_log_callback(conf.get());
    rd_kafka_conf_set_error_cb(conf.get(), &KafkaConsumer::on_error);
    rd_kafka_conf_set_offset_commit_cb(conf.get(), &KafkaConsumer::on_offset_commit);
    rd_kafka_conf_set_opaque(conf.get(), this);
    rk_ = create_client(RD_KAFKA_CONSUMER, std::move(conf), "consumer");
    rd_kafka_poll_set_consumer(rk_.get());

    PartitionListPtr topics(
        rd_kafka_topic_partition_list_new(static_cast<int>(options.topics.size())));
    for (const auto& topic : options.topics) {
      rd_kafka_topic_partition_list_add(topics.get(), topic.c_str(), RD_KAFKA_PARTITION_UA);
    }
    if (const rd_kafka_resp_err_t err = rd_kafka_subscribe(rk_.get(), topics.get())) {
      rd_kafka_consumer_close(rk_.get());
      throw brokers::BrokerError(
          ErrorKind::config,
          fmt::format("could not subscribe consumer group '{}' to topics {}: {}; check "
                      "the topic names",
                      group_id_, fmt::join(options.topics, ","), rd_kafka_err2str(err)));
    }
  }

  KafkaConsumer(const KafkaConsumer&) = delete;
  KafkaConsumer& operator=(const KafkaConsumer&) = delete;

  ~KafkaConsumer() override {
    try {
      close();
    } catch (...) {
    }
  }

  std::optional<Delivery> poll(std::chrono::milliseconds timeout) override {
    if (closed_.load()) {
      throw brokers::BrokerError(ErrorKind::internal,
                                 "Kafka consumer is closed: create a new one to consume again");
    }
    throw_if_fatal();
    MessagePtr message(rd_kafka_consumer_poll(rk_.get(), static_cast<int>(timeout.count())));
    if (!message) {
      return std::nullopt;
    }
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      handle_error(*message);
      return std::nullopt;
    }
    last_error_.store(RD_KAFKA_RESP_ERR_NO_ERROR);
    Delivery delivery;
    delivery.source = message->rkt ? rd_kafka_topic_name(message->rkt) : "";
    delivery.partition = message->partition;
    delivery.offset = message->offset;
    delivery.ack_token = fmt::format("{}:{}", message->partition, message->offset);
    brokers::Message& out = delivery.message;
    out.destination = delivery.source;
    if (message->key != nullptr) {
      out.key.emplace(static_cast<const char*>(message->key), message->key_len);
    }
    if (message->payload != nullptr) {
      out.payload.assign(static_cast<const char*>(message->payload), message->len);
    }
    rd_kafka_headers_t* headers = nullptr;  // owned by the message
    if (rd_kafka_message_headers(message.get(), &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        headers != nullptr) {
      bool have_id = false;
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0;
           rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
           ++i) {
        std::string text =
            value != nullptr ? std::string(static_cast<const char*>(value), size) : std::string();
        if (!have_id && name == brokers::wire::kMessageId) {
          out.message_id = std::move(text);
          have_id = true;
        } else {
          out.headers.emplace_back(name, std::move(text));
        }
      }
    }
    return delivery;
  }

  void ack(const Delivery& delivery) override {
    if (closed_.load()) {
      throw brokers::BrokerError(ErrorKind::internal,
                                 "Kafka consumer is closed: cannot ack after close()");
    }
    PartitionListPtr offsets(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_t* tp = rd_kafka_topic_partition_list_add(
        offsets.get(), delivery.source.c_str(), delivery.partition);
    tp->offset = delivery.offset + 1;
    rd_kafka_resp_err_t err = rd_kafka_commit(rk_.get(), offsets.get(), 0 /* synchronous */);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      err = offsets->elems[0].err;
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      // close() must not commit an older offset of this partition again.
      std::lock_guard lock(close_mutex_);
      if (auto it = acked_async_.find({delivery.source, delivery.partition}); it != acked_async_.end())
        it->second = std::max(it->second, delivery.offset + 1);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      const bool retryable = classify(err) == brokers::ErrorClass::transient;
      throw brokers::BrokerError(
          retryable ? ErrorKind::unavailable : ErrorKind::permanent,
          fmt::format(
              "could not commit offset {} of {} [{}] for consumer group '{}': {} [{}]; {}",
              delivery.offset + 1, delivery.source, delivery.partition, group_id_,
              rd_kafka_err2str(err), rd_kafka_err2name(err),
              retryable
                  ? "the message may be delivered again (e.g. after a rebalance), so handle it "
                    "idempotently"
                  : "check the consumer group's authorization"));
    }
  }

  // The highest offset of each partition in one asynchronous commit: the
  // caller has committed their effects already, and a commit that is lost
  // only means redeliveries, which the inbox skips. A failed asynchronous
  // commit is logged by on_offset_commit.
  void ack_batch(std::span<const Delivery> deliveries) override {
    if (deliveries.empty()) return;
    if (closed_.load()) {
      throw brokers::BrokerError(ErrorKind::internal, "Kafka consumer is closed: cannot ack after close()");
    }
    NextOffsets next_offsets;
    for (const auto& d : deliveries) {
      auto& next = next_offsets[{d.source, d.partition}];
      next = std::max(next, d.offset + 1);
    }
    {
      std::lock_guard lock(close_mutex_);
      for (const auto& [partition, next] : next_offsets) acked_async_[partition] = next;
    }
    if (const rd_kafka_resp_err_t err = rd_kafka_commit(rk_.get(), partition_list(next_offsets).get(), 1 /* asynchronous */)) {
      throw brokers::BrokerError(ErrorKind::unavailable,
                                 fmt::format("could not commit the offsets of {} deliveries for consumer group "
                                             "'{}': {}; they may be delivered again",
                                             deliveries.size(), group_id_, rd_kafka_err2str(err)));
    }
  }

  void close() override {
    std::lock_guard lock(close_mutex_);
    if (closed_.exchange(true)) {
      return;
    }
    // Asynchronous commits may still be on their way: commit the acked
    // offsets once more, synchronously, so the next member of the group
    // starts after them.
    if (!acked_async_.empty()) {
      if (const rd_kafka_resp_err_t err = rd_kafka_commit(rk_.get(), partition_list(acked_async_).get(), 0))
        spdlog::warn("Kafka consumer group '{}': the last offset commit failed: {}; those messages may be delivered "
                     "again (the inbox skips them)",
                     group_id_, rd_kafka_err2str(err));
    }
    if (const rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_.get())) {
      spdlog::warn("Kafka consumer group '{}': close failed: {}", group_id_, rd_kafka_err2str(err));
    }
  }

 private:
  void throw_if_fatal() const {
    char reason[512] = {};
    const rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk_.get(), reason, sizeof reason);
    if (fatal != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw brokers::BrokerError(
          ErrorKind::permanent,
          fmt::format("Kafka consumer group '{}' hit a fatal error ({}: {}): create a new "
                      "consumer",
                      group_id_, rd_kafka_err2name(fatal), reason));
    }
  }

  void handle_error(const rd_kafka_message_t& message) {
    const rd_kafka_resp_err_t err = message.err;
    const std::string topic = message.rkt ? rd_kafka_topic_name(message.rkt) : "";
    const std::string reason = rd_kafka_message_errstr(&message);
    if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      spdlog::debug("Kafka consumer: reached end of {} [{}] at offset {}", topic, message.partition,
                    message.offset);
      return;
    }
    if (consumer_error_is_fatal(err)) {
      char fatal_reason[512] = {};
      std::string text = reason;
      if (err == RD_KAFKA_RESP_ERR__FATAL &&
          rd_kafka_fatal_error(rk_.get(), fatal_reason, sizeof fatal_reason) !=
              RD_KAFKA_RESP_ERR_NO_ERROR) {
        text = fatal_reason;
      }
      throw brokers::BrokerError(
          ErrorKind::config,
          fmt::format(
              "Kafka consumer group '{}' cannot continue: {} [{}]{}; fix the configuration or "
              "permissions and create a new consumer",
              group_id_, text, rd_kafka_err2name(err),
              topic.empty() ? "" : " (topic '" + topic + "')"));
    }
    log_transient(err,
                  fmt::format("{}{}", reason, topic.empty() ? "" : " (topic '" + topic + "')"));
  }

  // One warning per change of error, not one per poll.
  void log_transient(rd_kafka_resp_err_t err, const std::string& text) noexcept {
    try {
      if (last_error_.exchange(err) != err) {
        spdlog::warn("Kafka consumer group '{}': {} [{}]; will keep retrying", group_id_, text,
                     rd_kafka_err2name(err));
      } else {
        spdlog::debug("Kafka consumer group '{}': {} [{}]", group_id_, text,
                      rd_kafka_err2name(err));
      }
    } catch (...) {
    }
  }

  static void on_error(rd_kafka_t* /*rk*/, int err, const char* reason, void* opaque) noexcept {
    auto* self = static_cast<KafkaConsumer*>(opaque);
    // Fatal errors also surface from poll(), which throws.
    self->log_transient(static_cast<rd_kafka_resp_err_t>(err), reason ? reason : "");
  }

  // The outcome of an asynchronous commit (ack_batch), served by poll().
  static void on_offset_commit(rd_kafka_t* /*rk*/, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t* /*offsets*/, void* opaque) noexcept {
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    try {
      spdlog::warn("Kafka consumer group '{}': an offset commit failed: {}; those messages may be delivered "
                   "again (the inbox skips them)",
                   static_cast<KafkaConsumer*>(opaque)->group_id_, rd_kafka_err2str(err));
    } catch (...) {  // no exception crosses the C callback
    }
  }

  using NextOffsets = std::map<std::pair<std::string, int32_t>, int64_t>;
  static PartitionListPtr partition_list(const NextOffsets& next_offsets) {
    PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(next_offsets.size())));
    for (const auto& [partition, next] : next_offsets)
      rd_kafka_topic_partition_list_add(list.get(), partition.first.c_str(), partition.second)->offset = next;
    return list;
  }

  std::string group_id_;
  NextOffsets acked_async_;  // guarded by close_mutex_
  std::atomic<rd_kafka_resp_err_t> last_error_{RD_KAFKA_RESP_ERR_NO_ERROR};
  std::atomic<bool> closed_{false};
  std::mutex close_mutex_;
  KafkaPtr rk_;
};

}  // namespace

std::unique_ptr<brokers::Consumer> make_consumer(const ConsumerOptions& options) {
  return std::make_unique<KafkaConsumer>(options);
}

}  // namespace txbox::kafka
