// Kafka publisher: one idempotent librdkafka producer shared by every relay
// worker thread. Delivery reports are served by a dedicated poller thread and
// routed, through per-message opaque state, to the batch that produced them.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "errors.hpp"
#include "handles.hpp"
#include "txbox/kafka/kafka.hpp"

namespace txbox::kafka {

namespace {

using namespace detail;
using brokers::ErrorClass;
using brokers::Message;
using brokers::PublishResult;
using Clock = std::chrono::steady_clock;

constexpr const char* kMessageIdHeader = "message-id";
constexpr std::chrono::milliseconds kShutdownFlush{10000};

// Shared by one publish() call and the delivery reports of its messages. The
// caller may give up (timeout) before every report arrived; late reports
// then still find valid state here (shared_ptr) and are ignored.
struct BatchState {
  std::mutex mutex;
  std::condition_variable done_cv;
  std::vector<PublishResult> results;
  std::vector<char> done;
  std::size_t pending = 0;
};

// One per produced message, passed as the librdkafka message opaque and
// deleted by the delivery report callback.
struct MessageState {
  std::shared_ptr<BatchState> batch;
  std::size_t index = 0;
  std::size_t bytes = 0;
};

std::size_t wire_size(const Message& message) {
  std::size_t bytes = message.payload.size() + (message.key ? message.key->size() : 0);
  for (const auto& [name, value] : message.headers) {
    bytes += name.size() + value.size();
  }
  return bytes + std::char_traits<char>::length(kMessageIdHeader) + message.message_id.size();
}

class KafkaPublisher final : public brokers::Publisher {
 public:
  explicit KafkaPublisher(const ProducerOptions& options)
      : message_timeout_(options.message_timeout) {
    if (options.bootstrap_servers.empty() && !options.properties.contains("bootstrap.servers")) {
      throw brokers::BrokerError(
          "ProducerOptions::bootstrap_servers is empty: set it to host:port[,host:port...]", false);
    }
    ConfPtr conf(rd_kafka_conf_new());
    if (!options.bootstrap_servers.empty()) {
      set_property(conf.get(), "bootstrap.servers", options.bootstrap_servers,
                   "ProducerOptions::bootstrap_servers");
    }
    set_property(conf.get(), "enable.idempotence", "true", "txbox producer defaults");
    set_property(conf.get(), "acks", "all", "txbox producer defaults");
    set_property(conf.get(), "partitioner", "murmur2_random", "txbox producer defaults");
    set_property(conf.get(), "log.connection.close", "false", "txbox producer defaults");
    set_property(conf.get(), "compression.codec", options.compression,
                 "ProducerOptions::compression");
    set_property(conf.get(), "linger.ms", std::to_string(options.linger.count()),
                 "ProducerOptions::linger");
    set_property(conf.get(), "message.timeout.ms", std::to_string(options.message_timeout.count()),
                 "ProducerOptions::message_timeout");
    for (const auto& [name, value] : options.properties) {
      set_property(conf.get(), name, value, "ProducerOptions::properties");
    }
    if (auto it = options.properties.find("message.timeout.ms"); it != options.properties.end()) {
      try {
        message_timeout_ = std::chrono::milliseconds(std::stoll(it->second));
      } catch (...) {
        // librdkafka accepted it, so it is a number; keep the option value otherwise.
      }
    }
    install_log_callback(conf.get());
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaPublisher::on_delivery);
    rd_kafka_conf_set_error_cb(conf.get(), &KafkaPublisher::on_error);
    rd_kafka_conf_set_opaque(conf.get(), this);
    rk_ = create_client(RD_KAFKA_PRODUCER, std::move(conf), "producer");
    poller_ = std::thread([this] { poll_loop(); });
  }

  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  ~KafkaPublisher() override {
    stopping_.store(true);
    if (poller_.joinable()) {
      poller_.join();
    }
    // rd_kafka_flush serves the remaining delivery reports on this thread.
    if (rd_kafka_flush(rk_.get(), static_cast<int>(kShutdownFlush.count())) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::warn(
          "Kafka publisher: {} message(s) still undelivered after {} ms at shutdown; purging them "
          "(they stay pending in the outbox and will be published again)",
          rd_kafka_outq_len(rk_.get()), kShutdownFlush.count());
      rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_flush(rk_.get(), 1000);
    }
    rk_.reset();
  }

  bool healthy() const override { return healthy_.load(); }

  std::vector<PublishResult> publish(std::span<const Message> messages,
                                     std::chrono::milliseconds timeout) override {
    if (messages.empty()) {
      return {};
    }
    const auto deadline = Clock::now() + timeout;
    throw_if_fatal();

    auto batch = std::make_shared<BatchState>();
    batch->results.resize(messages.size());
    batch->done.assign(messages.size(), 0);

    for (std::size_t i = 0; i < messages.size(); ++i) {
      const Message& message = messages[i];
      const std::size_t bytes = wire_size(message);
      rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
      for (;;) {
        err = produce(message, batch, i, bytes);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
          break;
        }
        // The poller thread drains the queue; wait a little and retry.
        const auto now = Clock::now();
        if (now >= deadline) {
          break;
        }
        std::this_thread::sleep_for(
            std::min<Clock::duration>(std::chrono::milliseconds(5), deadline - now));
      }
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        std::lock_guard lock(batch->mutex);
        batch->results[i] = PublishResult{
            false, classify(err),
            describe_publish_error(err, message.destination, bytes, message_timeout_)};
        batch->done[i] = 1;
      }
    }

    std::unique_lock lock(batch->mutex);
    batch->done_cv.wait_until(lock, deadline, [&] { return batch->pending == 0; });
    std::vector<PublishResult> results = batch->results;
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (!batch->done[i]) {
        results[i] = PublishResult{false, ErrorClass::transient,
                                   fmt::format("no delivery report from Kafka within the publish "
                                               "timeout of {} ms (topic '{}'): the "
                                               "broker is unreachable or slow; will be retried",
                                               timeout.count(), messages[i].destination)};
      }
    }
    return results;
  }

 private:
  // Hands one message to librdkafka. On success the MessageState belongs to
  // librdkafka until the delivery report; on failure nothing is pending.
  rd_kafka_resp_err_t produce(const Message& message, const std::shared_ptr<BatchState>& batch,
                              std::size_t index, std::size_t bytes) {
    HeadersPtr headers(rd_kafka_headers_new(message.headers.size() + 1));
    for (const auto& [name, value] : message.headers) {
      if (name == kMessageIdHeader) {
        continue;  // ours below is authoritative
      }
      rd_kafka_header_add(headers.get(), name.data(), static_cast<ssize_t>(name.size()),
                          value.data(), static_cast<ssize_t>(value.size()));
    }
    rd_kafka_header_add(headers.get(), kMessageIdHeader, -1, message.message_id.data(),
                        static_cast<ssize_t>(message.message_id.size()));

    auto state = std::make_unique<MessageState>(MessageState{batch, index, bytes});
    {
      std::lock_guard lock(batch->mutex);
      ++batch->pending;
    }
    auto* payload = const_cast<char*>(message.payload.data());
    rd_kafka_resp_err_t err;
    if (message.key) {
      err = rd_kafka_producev(rk_.get(), RD_KAFKA_V_TOPIC(message.destination.c_str()),
                              RD_KAFKA_V_KEY(message.key->data(), message.key->size()),
                              RD_KAFKA_V_VALUE(payload, message.payload.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(state.get()),
                              RD_KAFKA_V_END);
    } else {
      err = rd_kafka_producev(rk_.get(), RD_KAFKA_V_TOPIC(message.destination.c_str()),
                              RD_KAFKA_V_VALUE(payload, message.payload.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(state.get()),
                              RD_KAFKA_V_END);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      (void)headers.release();  // owned by the message now
      (void)state.release();    // deleted by on_delivery
      return err;
    }
    std::lock_guard lock(batch->mutex);
    --batch->pending;
    return err;
  }

  void throw_if_fatal() const {
    char reason[512] = {};
    const rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk_.get(), reason, sizeof reason);
    if (fatal != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw brokers::BrokerError(
          fmt::format(
              "the Kafka producer hit a fatal error ({}: {}) and cannot publish any more: recreate "
              "the publisher (restart the relay)",
              rd_kafka_err2name(fatal), reason),
          false);
    }
  }

  void poll_loop() noexcept {
    while (!stopping_.load()) {
      rd_kafka_poll(rk_.get(), 100);
    }
  }

  void set_healthy(bool healthy, std::string_view why) noexcept {
    try {
      if (healthy_.exchange(healthy) == healthy) {
        return;
      }
      if (healthy) {
        spdlog::info("Kafka publisher: brokers reachable again, deliveries confirmed");
      } else {
        spdlog::warn(
            "Kafka publisher: {}; messages stay queued and are retried until message.timeout.ms "
            "({} ms)",
            why, message_timeout_.count());
      }
    } catch (...) {
    }
  }

  static void on_delivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* rkmessage,
                          void* opaque) noexcept {
    auto* self = static_cast<KafkaPublisher*>(opaque);
    std::unique_ptr<MessageState> state(static_cast<MessageState*>(rkmessage->_private));
    if (!state) {
      return;
    }
    try {
      PublishResult result;
      if (rkmessage->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        result.confirmed = true;
        self->set_healthy(true, {});
      } else {
        const char* topic = rkmessage->rkt ? rd_kafka_topic_name(rkmessage->rkt) : "";
        result.error_class = classify(rkmessage->err);
        result.error =
            describe_publish_error(rkmessage->err, topic, state->bytes, self->message_timeout_);
      }
      BatchState& batch = *state->batch;
      std::lock_guard lock(batch.mutex);
      batch.results[state->index] = std::move(result);
      batch.done[state->index] = 1;
      if (--batch.pending == 0) {
        batch.done_cv.notify_all();
      }
    } catch (...) {
      // Never let an exception cross into librdkafka; the caller then sees a
      // transient "no delivery report" failure for this message.
    }
  }

  static void on_error(rd_kafka_t* rk, int err, const char* reason, void* opaque) noexcept {
    auto* self = static_cast<KafkaPublisher*>(opaque);
    try {
      const auto code = static_cast<rd_kafka_resp_err_t>(err);
      if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        self->set_healthy(false,
                          fmt::format("all Kafka brokers are down ({})", reason ? reason : ""));
      } else if (code == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal_reason[512] = {};
        const rd_kafka_resp_err_t fatal =
            rd_kafka_fatal_error(rk, fatal_reason, sizeof fatal_reason);
        self->healthy_.store(false);
        spdlog::error(
            "Kafka publisher: fatal producer error {}: {}; the publisher must be recreated",
            rd_kafka_err2name(fatal), fatal_reason);
      } else {
        spdlog::debug("Kafka publisher: {}: {}", rd_kafka_err2name(code), reason ? reason : "");
      }
    } catch (...) {
    }
  }

  std::chrono::milliseconds message_timeout_;
  std::atomic<bool> healthy_{true};
  std::atomic<bool> stopping_{false};
  KafkaPtr rk_;
  std::thread poller_;
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const ProducerOptions& options) {
  return std::make_unique<KafkaPublisher>(options);
}

}  // namespace txbox::kafka
