// RabbitMQ consumer: one connection, one channel, basic.consume with manual
// acks. poll() reconnects (with backoff) after a connection loss and
// re-declares the topology; the broker redelivers what was unacked.
// dead_letter() publishes a copy with the dead-letter headers to the
// dead-letter exchange through a publisher of its own (confirms), then acks.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <span>
#include <thread>
#include <map>
#include <unordered_map>

#include "connection.hpp"
#include "errors.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::rabbitmq {

namespace {

using namespace detail;
using brokers::Delivery;
namespace wire = brokers::wire;

constexpr int kConsumerHeartbeat = 30;  // seconds
// How long dead_letter() waits for the confirm of the dead-letter copy.
constexpr std::chrono::milliseconds kDeadLetterTimeout{10000};

// An AMQP table argument holding string / integer values.
struct Arguments {
  std::vector<amqp_table_entry_t> entries;
  amqp_table_t table() {
    amqp_table_t t;
    t.num_entries = static_cast<int>(entries.size());
    t.entries = entries.empty() ? nullptr : entries.data();
    return t;
  }
  void add(const char* name, const std::string& value) {
    entries.push_back(utf8_entry(amqp_cstring_bytes(name), as_bytes(value)));
  }
};

std::optional<std::string> string_value(const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return to_string(v.value.bytes);
    case AMQP_FIELD_KIND_I8: return std::to_string(v.value.i8);
    case AMQP_FIELD_KIND_U8: return std::to_string(v.value.u8);
    case AMQP_FIELD_KIND_I16: return std::to_string(v.value.i16);
    case AMQP_FIELD_KIND_U16: return std::to_string(v.value.u16);
    case AMQP_FIELD_KIND_I32: return std::to_string(v.value.i32);
    case AMQP_FIELD_KIND_U32: return std::to_string(v.value.u32);
    case AMQP_FIELD_KIND_I64: return std::to_string(v.value.i64);
    case AMQP_FIELD_KIND_U64: return std::to_string(v.value.u64);
    case AMQP_FIELD_KIND_BOOLEAN: return std::string(v.value.boolean ? "true" : "false");
    default: return std::nullopt;  // tables, arrays, decimals: not representable as a string header
  }
}

// A delivery not settled yet.
struct Outstanding {
  std::string message_id;
  std::string routing_key;  // what it was published with (the dead letter keeps it)
};

class RabbitConsumer final : public brokers::Consumer {
 public:
  RabbitConsumer(brokers::BrokerUrl url, Endpoint endpoint, ConsumerOptions options)
      : url_(std::move(url)), endpoint_(std::move(endpoint)), options_(std::move(options)) {
    if (options_.queue.empty()) {
      throw txbox::UsageError("rabbitmq::ConsumerOptions::queue is empty: name the queue to consume");
    }
    if (options_.prefetch == 0) {
      throw txbox::UsageError("rabbitmq::ConsumerOptions::prefetch is 0: use at least 1 (default 300)");
    }
    if (options_.dead_letter_exchange.empty()) options_.dead_letter_exchange = options_.queue + ".dlx";
    if (options_.dead_letter_queue.empty()) options_.dead_letter_queue = options_.queue + ".dlq";
    try {
      connect();
    } catch (const AmqpError& e) {
      if (classify(e.failure()) == brokers::ErrorClass::permanent || is_refused_login(e.failure()) ||
          e.failure().code == 406) {
        throw brokers::BrokerError(ErrorKind::config,
                                   fmt::format("RabbitMQ consumer of queue '{}' on {}: {}",
                                               options_.queue, endpoint_.display, e.what()));
      }
      spdlog::warn("RabbitMQ consumer: {} — will retry on poll", e.what());
      schedule_retry(e.what());
    }
  }

  ~RabbitConsumer() override { close(); }

  std::optional<Delivery> poll(std::chrono::milliseconds timeout) override {
    if (closed_)
      throw brokers::BrokerError(ErrorKind::internal,
                                 "RabbitMQ consumer: poll() after close(): create a new consumer");
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (!conn_ && !reconnect(deadline)) return std::nullopt;
      amqp_connection_state_t state = conn_->get();
      amqp_maybe_release_buffers(state);
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      timeval tv = to_timeval(left);
      amqp_envelope_t envelope{};
      amqp_rpc_reply_t reply = amqp_consume_message(state, &envelope, &tv, 0);
      if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
        Delivery d = to_delivery(envelope);
        std::string routing_key = to_string(envelope.routing_key);
        amqp_destroy_envelope(&envelope);
        outstanding_[static_cast<uint64_t>(d.offset)] = {d.message.message_id, std::move(routing_key)};
        return d;
      }
      if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT) {
        return std::nullopt;
      }
      if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
          reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        handle_other_frame();  // may drop the connection
      } else {
        lost(failure_of(reply, "receiving from RabbitMQ").text);
      }
      if (Clock::now() >= deadline) return std::nullopt;
    }
  }

  void ack(const Delivery& delivery) override { settle(delivery, false); }

  // One basic.ack with `multiple` for the longest run of this batch that
  // starts at the oldest unacked delivery of the connection (`multiple`
  // acks every tag up to the one given, so only a run with nothing else
  // unsettled in it may use it); the rest one basic.ack each.
  void ack_batch(std::span<const Delivery> deliveries) override {
    std::map<uint64_t, const Delivery*> batch;
    for (const auto& d : deliveries)
      if (find(d, "ack") != nullptr) batch.emplace(delivery_tag(d), &d);
    auto next = batch.begin();
    for (auto it = outstanding_.begin(); it != outstanding_.end() && next != batch.end() && it->first == next->first;
         ++it)
      ++next;
    if (std::distance(batch.begin(), next) > 1) {
      const uint64_t last = std::prev(next)->first;
      const int status = amqp_basic_ack(conn_->get(), conn_->channel(), last, /*multiple=*/1);
      if (status != AMQP_STATUS_OK) {
        std::string why = fmt::format("RabbitMQ consumer: ack of {} messages failed: {}; they will be redelivered",
                                      std::distance(batch.begin(), next), amqp_error_string2(status));
        lost(why);
        throw brokers::BrokerError(ErrorKind::unavailable, why);
      }
      outstanding_.erase(outstanding_.begin(), outstanding_.upper_bound(last));
      batch.erase(batch.begin(), next);
    }
    for (const auto& [tag, d] : batch) settle(*d, false);
  }

  // A copy of the message with the dead-letter headers goes to the
  // dead-letter exchange (with the original routing key), confirmed, then
  // the original is acked: a crash in between leaves a duplicate dead letter
  // (same message id), never none. When the copy is refused for good (no
  // such exchange, nothing bound), the original is rejected instead and the
  // queue's own dead-lettering moves it (with RabbitMQ's x-death header, no
  // dlq-* headers).
  bool dead_letter(const Delivery& delivery, const std::string& reason) override {
    const Outstanding* original = find(delivery, "dead-letter");
    if (original == nullptr) return true;  // the broker redelivers it (see find())
    brokers::Message letter = delivery.message;
    letter.destination = options_.dead_letter_exchange + "/" + original->routing_key;
    wire::add_dead_letter_headers(letter.headers, {.error = reason,
                                                   .error_class = std::string(wire::kClassHandler),
                                                   .attempts = delivery.delivery_attempt,
                                                   .original_destination = delivery.message.destination});
    const brokers::PublishResult result = publish_dead_letter(letter);
    if (result.confirmed) {
      settle(delivery, false);
      spdlog::info("RabbitMQ consumer: message {} from queue '{}' sent to dead-letter exchange '{}': {}",
                   delivery.message.message_id, options_.queue, options_.dead_letter_exchange, reason);
      return true;
    }
    if (result.error_class == brokers::ErrorClass::permanent) {
      spdlog::warn(
          "RabbitMQ consumer: the dead letter of message {} cannot go to exchange '{}' ({}); rejecting it "
          "instead, so the queue's own dead-lettering moves it (without dlq-* headers)",
          delivery.message.message_id, options_.dead_letter_exchange, result.error);
      settle(delivery, true);
      return true;
    }
    throw brokers::BrokerError(
        ErrorKind::unavailable,
        fmt::format("RabbitMQ consumer: the dead letter of message {} was not confirmed by "
                    "exchange '{}': {}; the "
                    "message stays unacked and is delivered again",
                    delivery.message.message_id, options_.dead_letter_exchange, result.error));
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    conn_.reset();  // polite close: the broker requeues what was not acked
    outstanding_.clear();
    dead_letter_publisher_.reset();
  }

 private:
  static bool is_refused_login(const Failure& f) {
    return f.cause == Cause::connection_closed && (f.code == 403 || f.code == 530);
  }

  static uint64_t delivery_tag(const Delivery& delivery) {
    try {
      return std::stoull(delivery.ack_token);
    } catch (const std::exception&) {
      throw brokers::BrokerError(ErrorKind::internal,
                                 fmt::format("RabbitMQ consumer: ack token '{}' is not a delivery "
                                             "tag: pass the Delivery returned by poll()",
                                             delivery.ack_token));
    }
  }

  // The outstanding delivery, or nullptr (with a warning) when it was
  // delivered on a connection that is gone: the broker has requeued it and
  // will deliver it again (the inbox then sees a duplicate).
  const Outstanding* find(const Delivery& delivery, const char* what) const {
    const uint64_t tag = delivery_tag(delivery);
    auto it = outstanding_.find(tag);
    if (conn_ && it != outstanding_.end() && it->second.message_id == delivery.message.message_id) return &it->second;
    spdlog::warn(
        "RabbitMQ consumer: cannot {} message {} (delivery tag {}): its connection was lost since it was "
        "delivered; the broker redelivers it",
        what, delivery.message.message_id, tag);
    return nullptr;
  }

  // Publishes one dead letter and waits for its confirm, on a publisher of
  // its own (made on the first dead letter). Never throws.
  brokers::PublishResult publish_dead_letter(const brokers::Message& letter) {
    try {
      if (!dead_letter_publisher_) dead_letter_publisher_ = make_publisher(url_);
      auto results = dead_letter_publisher_->publish(std::span(&letter, 1), kDeadLetterTimeout);
      if (!results.empty()) return results[0];
      return {false, brokers::ErrorClass::transient, "no result"};
    } catch (const std::exception& e) {
      dead_letter_publisher_.reset();
      return {false, brokers::ErrorClass::transient, e.what()};
    }
  }

  // Acks or rejects (no requeue) on the connection the message came from.
  void settle(const Delivery& delivery, bool reject) {
    const char* what = reject ? "reject" : "ack";
    if (find(delivery, what) == nullptr) return;
    const uint64_t tag = delivery_tag(delivery);
    auto it = outstanding_.find(tag);
    int status = reject ? amqp_basic_reject(conn_->get(), conn_->channel(), tag, /*requeue=*/0)
                        : amqp_basic_ack(conn_->get(), conn_->channel(), tag, /*multiple=*/0);
    if (status != AMQP_STATUS_OK) {
      std::string why = fmt::format("RabbitMQ consumer: {} of message {} failed: {}; the message will be redelivered",
                                    what, delivery.message.message_id, amqp_error_string2(status));
      lost(why);
      throw brokers::BrokerError(ErrorKind::unavailable, why);
    }
    outstanding_.erase(it);
  }

  Delivery to_delivery(const amqp_envelope_t& envelope) const {
    Delivery d;
    const amqp_basic_properties_t& p = envelope.message.properties;
    if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
      for (int i = 0; i < p.headers.num_entries; ++i) {
        const amqp_table_entry_t& e = p.headers.entries[i];
        auto value = string_value(e.value);
        if (!value) continue;
        std::string name = to_string(e.key);
        if (name == wire::kMessageId && d.message.message_id.empty()) d.message.message_id = *value;
        if (name == wire::kMessageKey) d.message.key = *value;
        d.message.headers.emplace_back(std::move(name), std::move(*value));
      }
    }
    if ((p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) && p.message_id.len > 0) d.message.message_id = to_string(p.message_id);
    if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
      bool has = false;
      for (const auto& h : d.message.headers) has = has || h.first == wire::kContentType;
      if (!has) d.message.headers.emplace_back(wire::kContentType, to_string(p.content_type));
    }
    d.message.payload = to_string(envelope.message.body);
    d.message.destination = to_string(envelope.exchange).empty()
                                ? to_string(envelope.routing_key)
                                : to_string(envelope.exchange) + "/" + to_string(envelope.routing_key);
    d.source = options_.queue;
    d.partition = 0;
    d.offset = static_cast<int64_t>(envelope.delivery_tag);
    d.ack_token = std::to_string(envelope.delivery_tag);
    d.delivery_attempt = envelope.redelivered ? 2 : 1;
    return d;
  }

  // A frame that is not a delivery: a close (drop the connection), a
  // consumer cancel (queue deleted), or something to ignore.
  void handle_other_frame() {
    amqp_frame_t frame{};
    timeval tv{};
    int status = amqp_simple_wait_frame_noblock(conn_->get(), &frame, &tv);
    if (status == AMQP_STATUS_TIMEOUT) return;
    if (status != AMQP_STATUS_OK) {
      lost(fmt::format("receiving from RabbitMQ: {}", amqp_error_string2(status)));
      return;
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) return;
    switch (frame.payload.method.id) {
      case AMQP_CHANNEL_CLOSE_METHOD: {
        const auto* m = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
        std::string text = to_string(m->reply_text);
        conn_->send_channel_close_ok(frame.channel);
        lost(describe({Cause::channel_closed, m->reply_code, "RabbitMQ closed the channel: " + text}));
        return;
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        const auto* m = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
        std::string text = to_string(m->reply_text);
        conn_->send_connection_close_ok();
        lost(describe({Cause::connection_closed, m->reply_code, "RabbitMQ closed the connection: " + text}));
        return;
      }
      case AMQP_BASIC_CANCEL_METHOD:
        conn_->mark_broken();
        lost(fmt::format("RabbitMQ cancelled the consumer of queue '{}' (queue deleted?)", options_.queue));
        return;
      default:
        return;
    }
  }

  // Connects (waiting for the backoff, within `deadline`); false if not connected.
  bool reconnect(Clock::time_point deadline) {
    while (Clock::now() < next_connect_) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(next_connect_ - Clock::now(), deadline - Clock::now()));
    }
    try {
      connect();
      spdlog::info("RabbitMQ consumer: connected to {} again, consuming queue '{}'", endpoint_.display,
                   options_.queue);
      return true;
    } catch (const AmqpError& e) {
      schedule_retry(e.what());
      return false;
    }
  }

  void schedule_retry(const std::string& why) {
    conn_.reset();
    next_connect_ = Clock::now() + backoff_;
    if (backoff_ == kBackoffMin) spdlog::warn("RabbitMQ consumer: {}; retrying with backoff", why);
    backoff_ = std::min(backoff_ * 2, kBackoffMax);
  }

  void lost(const std::string& why) {
    spdlog::warn("RabbitMQ consumer of queue '{}': connection lost ({}); reconnecting (unacked messages are "
                 "redelivered)",
                 options_.queue, why);
    if (conn_) conn_->mark_broken();
    conn_.reset();
    outstanding_.clear();
    next_connect_ = Clock::now() + kBackoffMin;
  }

  void connect() {
    conn_.reset();
    outstanding_.clear();
    auto conn = Connection::open(endpoint_, 1);
    amqp_connection_state_t s = conn->get();
    amqp_channel_t ch = conn->channel();
    if (options_.declare) {
      const std::string& q = options_.queue;
      amqp_exchange_declare(s, ch, as_bytes(options_.dead_letter_exchange), amqp_cstring_bytes("fanout"), 0,
                            /*durable=*/1, 0, 0, amqp_empty_table);
      conn->check_rpc(fmt::format("declaring dead-letter exchange '{}'", options_.dead_letter_exchange));
      amqp_queue_declare(s, ch, as_bytes(options_.dead_letter_queue), 0, /*durable=*/1, 0, 0, amqp_empty_table);
      conn->check_rpc(fmt::format("declaring dead-letter queue '{}'", options_.dead_letter_queue));
      amqp_queue_bind(s, ch, as_bytes(options_.dead_letter_queue), as_bytes(options_.dead_letter_exchange),
                      amqp_empty_bytes, amqp_empty_table);
      conn->check_rpc(fmt::format("binding dead-letter queue '{}' to '{}'", options_.dead_letter_queue,
                                  options_.dead_letter_exchange));
      Arguments args;
      args.add("x-dead-letter-exchange", options_.dead_letter_exchange);
      amqp_queue_declare(s, ch, as_bytes(q), 0, /*durable=*/1, 0, 0, args.table());
      conn->check_rpc(fmt::format(
          "declaring queue '{}' (durable, x-dead-letter-exchange '{}'); if it exists with other arguments, "
          "delete it or set declare=false",
          q, options_.dead_letter_exchange));
      if (!options_.exchange.empty()) {
        amqp_exchange_declare(s, ch, as_bytes(options_.exchange), as_bytes(options_.exchange_type), 0,
                              /*durable=*/1, 0, 0, amqp_empty_table);
        conn->check_rpc(fmt::format("declaring exchange '{}' of type '{}'", options_.exchange, options_.exchange_type));
        std::vector<std::string> keys = options_.binding_keys;
        if (keys.empty()) keys.push_back(q);
        for (const auto& key : keys) {
          amqp_queue_bind(s, ch, as_bytes(q), as_bytes(options_.exchange), as_bytes(key), amqp_empty_table);
          conn->check_rpc(fmt::format("binding queue '{}' to exchange '{}' with key '{}'", q, options_.exchange, key));
        }
      }
    }
    amqp_basic_qos(s, ch, 0, options_.prefetch, 0);
    conn->check_rpc("setting the prefetch (basic.qos)");
    amqp_basic_consume(s, ch, as_bytes(options_.queue), amqp_empty_bytes, 0, /*no_ack=*/0, 0, amqp_empty_table);
    conn->check_rpc(fmt::format("consuming queue '{}' (does it exist? set declare=true to create it)", options_.queue));
    conn_ = std::move(conn);
    backoff_ = kBackoffMin;
    next_connect_ = {};
  }

  brokers::BrokerUrl url_;  // for the dead-letter publisher
  Endpoint endpoint_;
  ConsumerOptions options_;
  std::unique_ptr<Connection> conn_;
  std::map<uint64_t, Outstanding> outstanding_;  // by delivery tag, this connection (ordered: see ack_batch)
  std::unique_ptr<brokers::Publisher> dead_letter_publisher_;
  Clock::time_point next_connect_{};
  std::chrono::milliseconds backoff_{kBackoffMin};
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url, const ConsumerOptions& options) {
  return std::make_unique<RabbitConsumer>(url, parse_endpoint(url, {}, kConsumerHeartbeat), options);
}

// The factory the broker registry calls (brokers::open_consumer).
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  // The queue, with its dead-letter exchange and queue, declared if missing.
  ConsumerOptions options{.queue = subscription.source};
  for (const auto& [name, value] : subscription.properties) {
    if (name != "prefetch")
      throw txbox::ConfigError("the RabbitMQ consumer has no property '" + name + "'",
                               "it takes prefetch=N (unacked deliveries the broker sends ahead, default " +
                                   std::to_string(options.prefetch) + ")");
    unsigned long prefetch = 0;
    size_t used = 0;
    try {
      prefetch = std::stoul(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != value.size() || prefetch < 1 || prefetch > 65535)
      throw txbox::ConfigError("the RabbitMQ consumer property prefetch='" + value + "' is not a number from 1 to 65535",
                               "give the deliveries the broker may send ahead of the acks, e.g. prefetch=800");
    options.prefetch = static_cast<uint16_t>(prefetch);
  }
  return make_consumer(url, options);
}

}  // namespace txbox::rabbitmq
