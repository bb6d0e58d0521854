// RabbitMQ publisher: a pool of connections, one per concurrent publish()
// call, each with one confirm-mode channel. A batch is published in full,
// then the broker's basic.ack / basic.nack / basic.return frames are read
// until every delivery tag has an outcome or the timeout expires.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "connection.hpp"
#include "errors.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::rabbitmq {

namespace {

using namespace detail;
using brokers::ErrorClass;
using brokers::Message;
using brokers::PublishResult;
using Clock = std::chrono::steady_clock;

constexpr const char* kMessageIdHeader = "message-id";
constexpr const char* kMessageKeyHeader = "message-key";
constexpr const char* kContentTypeHeader = "content-type";
constexpr std::chrono::milliseconds kBackoffMin{100};
constexpr std::chrono::milliseconds kBackoffMax{5000};
constexpr std::size_t kDrainEvery = 64;  // read pending confirms every N publishes

struct Target {
  std::string exchange;
  std::string routing_key;
};

Target split_destination(const std::string& destination) {
  auto slash = destination.find('/');
  if (slash == std::string::npos) return {"", destination};
  return {destination.substr(0, slash), destination.substr(slash + 1)};
}

std::string where(const Target& t) {
  if (t.exchange.empty()) return fmt::format("the default exchange, routing key (queue) '{}'", t.routing_key);
  return fmt::format("exchange '{}' routing key '{}'", t.exchange, t.routing_key);
}

// One pooled connection and its confirm bookkeeping.
struct PubConnection {
  std::unique_ptr<Connection> conn;
  amqp_channel_t tag_channel = 0;
  uint64_t next_tag = 1;                // next delivery tag on tag_channel
  std::set<std::string> known_exchanges;  // passively checked to exist
  void sync_channel() {
    if (conn->channel() != tag_channel) {
      tag_channel = conn->channel();
      next_tag = 1;
    }
  }
};

// The outcome bookkeeping of one publish() call.
class Batch {
 public:
  Batch(std::span<const Message> messages, std::vector<Target> targets)
      : messages_(messages), targets_(std::move(targets)), results_(messages.size()),
        done_(messages.size(), 0), returned_(messages.size()) {}

  void settle(std::size_t i, PublishResult r) {
    if (done_[i]) return;
    results_[i] = std::move(r);
    done_[i] = 1;
  }
  void fail(std::size_t i, const Failure& f) { settle(i, {false, classify(f), describe(f)}); }

  // Delivery tag `tag` (first = base) maps to message published_[tag - base].
  void start(uint64_t base) { base_ = base; }
  void published(std::size_t index) { published_.push_back(index); }
  std::size_t pending() const { return published_.size() - resolved_; }

  void confirm(uint64_t tag, bool multiple, bool ack) {
    if (tag < base_) return;  // from an earlier batch that timed out
    uint64_t pos = tag - base_;
    if (pos >= published_.size()) return;
    uint64_t from = multiple ? 0 : pos;
    for (uint64_t p = from; p <= pos; ++p) {
      std::size_t i = published_[p];
      if (done_[i]) continue;
      ++resolved_;
      if (!ack) {
        fail(i, {Cause::nack, 0, fmt::format("RabbitMQ nacked the message to {}", where(targets_[i]))});
      } else if (returned_[i]) {
        fail(i, *returned_[i]);
      } else {
        settle(i, {true, ErrorClass::transient, {}});
      }
    }
  }

  // basic.return: matched to the message by its message_id property.
  void returned(const std::string& message_id, int code, const std::string& text) {
    for (std::size_t i : published_) {
      if (!done_[i] && !returned_[i] && messages_[i].message_id == message_id) {
        const Target& t = targets_[i];
        std::string reason =
            t.exchange.empty()
                ? fmt::format("no queue named '{}' exists for the default exchange (RabbitMQ returned the "
                              "message: {} {}): declare the queue or fix the destination",
                              t.routing_key, code, text)
                : fmt::format("no queue is bound for exchange '{}' routing key '{}' (RabbitMQ returned the "
                              "message: {} {}): declare and bind a queue",
                              t.exchange, t.routing_key, code, text);
        returned_[i] = Failure{Cause::returned, code, std::move(reason)};
        return;
      }
    }
  }

  // Every published, unconfirmed message fails with `f`; for a 404 naming
  // an exchange only messages to that exchange are permanent.
  void fail_unresolved(const Failure& f) {
    for (std::size_t i : published_) {
      if (done_[i]) continue;
      ++resolved_;
      Failure own = f;
      if (f.code == 404 && !targets_[i].exchange.empty() &&
          f.text.find("'" + targets_[i].exchange + "'") == std::string::npos) {
        own.code = 0;  // another exchange closed the channel: this one is collateral
        own.text = fmt::format("the channel was closed by an error on another message ({}); will be retried",
                               f.text);
      }
      fail(i, own);
    }
  }

  std::vector<PublishResult> finish(const std::string& unsettled_reason) {
    for (std::size_t i = 0; i < results_.size(); ++i) {
      if (!done_[i]) {
        results_[i] = {false, ErrorClass::transient, unsettled_reason};
      }
    }
    return std::move(results_);
  }

  const Target& target(std::size_t i) const { return targets_[i]; }
  bool done(std::size_t i) const { return done_[i] != 0; }

 private:
  std::span<const Message> messages_;
  std::vector<Target> targets_;
  std::vector<PublishResult> results_;
  std::vector<char> done_;
  std::vector<std::optional<Failure>> returned_;
  std::vector<std::size_t> published_;
  std::size_t resolved_ = 0;
  uint64_t base_ = 1;
};

class RabbitPublisher final : public brokers::Publisher {
 public:
  explicit RabbitPublisher(Endpoint endpoint) : endpoint_(std::move(endpoint)) {
    // Connect once now so a refused login fails at startup; an unreachable
    // broker is only logged (publish() keeps retrying).
    try {
      auto pc = std::make_unique<PubConnection>();
      pc->conn = Connection::open(endpoint_, 1);
      pc->conn->enable_confirms();
      pool_.push_back(std::move(pc));
    } catch (const AmqpError& e) {
      const Failure& f = e.failure();
      if (f.cause == Cause::connection_closed && (f.code == 403 || f.code == 530)) {
        throw brokers::BrokerError(fmt::format("RabbitMQ publisher for {}: {}", endpoint_.display, e.what()),
                                   false);
      }
      spdlog::warn("RabbitMQ publisher: {} — will retry on publish", e.what());
      healthy_.store(false);
      failing_ = true;
      last_error_ = e.what();
    }
  }

  bool healthy() const override { return healthy_.load(); }

  std::vector<PublishResult> publish(std::span<const Message> messages,
                                     std::chrono::milliseconds timeout) override {
    if (messages.empty()) return {};
    const auto deadline = Clock::now() + timeout;
    std::vector<Target> targets;
    targets.reserve(messages.size());
    for (const auto& m : messages) targets.push_back(split_destination(m.destination));
    Batch batch(messages, std::move(targets));

    std::string connect_error;
    auto pc = acquire(connect_error);
    if (!pc) return batch.finish(connect_error);
    std::string unsettled;
    try {
      unsettled = publish_on(*pc, messages, batch, deadline, timeout);
    } catch (const std::exception& e) {  // allocation failures and the like
      pc->conn->mark_broken();
      unsettled = fmt::format("RabbitMQ publish failed: {}; will be retried", e.what());
    }
    release(std::move(pc));
    return batch.finish(unsettled);
  }

 private:
  // Publishes and waits for confirms; returns the reason for messages left
  // without an outcome.
  std::string publish_on(PubConnection& pc, std::span<const Message> messages, Batch& batch,
                         Clock::time_point deadline, std::chrono::milliseconds timeout) {
    Connection& conn = *pc.conn;
    // Exchanges not seen on this connection yet: passive declare, so a
    // missing one fails its messages without killing the channel mid-batch.
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const std::string& ex = batch.target(i).exchange;
      if (ex.empty() || pc.known_exchanges.contains(ex)) continue;
      amqp_exchange_declare(conn.get(), conn.channel(), as_bytes(ex), amqp_cstring_bytes("direct"), 1, 0, 0, 0,
                            amqp_empty_table);
      try {
        conn.check_rpc(fmt::format("checking that exchange '{}' exists", ex));
        pc.known_exchanges.insert(ex);
      } catch (const AmqpError& e) {
        if (conn.broken()) {
          on_connection_lost(e.what());
          return fmt::format("{}; will be retried", e.what());
        }
        Failure f = e.failure();
        if (f.code == 404) {
          f.text = fmt::format("exchange '{}' does not exist in vhost '{}'", ex, endpoint_.vhost);
        }
        for (std::size_t j = i; j < messages.size(); ++j) {
          if (batch.target(j).exchange == ex) batch.fail(j, f);
        }
      }
    }

    pc.sync_channel();
    batch.start(pc.next_tag);
    std::vector<amqp_table_entry_t> entries;
    std::string unsettled = fmt::format(
        "no confirm from RabbitMQ within the publish timeout of {} ms: the broker is slow or unreachable; "
        "will be retried",
        timeout.count());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (batch.done(i)) continue;
      const Message& m = messages[i];
      const Target& t = batch.target(i);
      entries.clear();
      const std::string* content_type = nullptr;
      for (const auto& [name, value] : m.headers) {
        if (name == kMessageIdHeader || name == kMessageKeyHeader) continue;  // ours below
        if (name == kContentTypeHeader) content_type = &value;
        entries.push_back(string_entry(name, value));
      }
      entries.push_back(string_entry_c(kMessageIdHeader, m.message_id));
      if (m.key) entries.push_back(string_entry_c(kMessageKeyHeader, *m.key));
      amqp_basic_properties_t props{};
      props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
      props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
      props.message_id = as_bytes(m.message_id);
      props.headers.num_entries = static_cast<int>(entries.size());
      props.headers.entries = entries.data();
      if (content_type) {
        props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        props.content_type = as_bytes(*content_type);
      }
      int status = amqp_basic_publish(conn.get(), conn.channel(), as_bytes(t.exchange), as_bytes(t.routing_key),
                                      /*mandatory=*/1, /*immediate=*/0, &props, as_bytes(m.payload));
      if (status != AMQP_STATUS_OK) {
        Failure f{Cause::library, status,
                  fmt::format("publishing to {} on {}: {}", where(t), endpoint_.display, amqp_error_string2(status))};
        if (status == AMQP_STATUS_TABLE_TOO_BIG) {
          batch.fail(i, f);  // nothing was sent for it
          continue;
        }
        conn.mark_broken();
        on_connection_lost(f.text);
        batch.fail_unresolved(f);
        return describe(f);
      }
      batch.published(i);
      ++pc.next_tag;
      if ((i + 1) % kDrainEvery == 0) {
        if (auto stop = read_frames(pc, batch, Clock::now())) return *stop;
      }
    }
    while (batch.pending() > 0) {
      if (Clock::now() >= deadline) return unsettled;
      if (auto stop = read_frames(pc, batch, deadline)) return *stop;
    }
    healthy_.store(true);
    return unsettled;
  }

  // Reads frames until none is ready before `until` (at least one attempt).
  // Returns a reason when the connection or channel failed (the batch's
  // unresolved messages are then already failed).
  std::optional<std::string> read_frames(PubConnection& pc, Batch& batch, Clock::time_point until) {
    Connection& conn = *pc.conn;
    for (;;) {
      amqp_maybe_release_buffers(conn.get());
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      timeval tv = to_timeval(left);
      amqp_frame_t frame{};
      int status = amqp_simple_wait_frame_noblock(conn.get(), &frame, &tv);
      if (status == AMQP_STATUS_TIMEOUT) return std::nullopt;
      if (status != AMQP_STATUS_OK) {
        Failure f{Cause::library, status,
                  fmt::format("waiting for confirms from RabbitMQ at {}: {}", endpoint_.display,
                              amqp_error_string2(status))};
        conn.mark_broken();
        on_connection_lost(f.text);
        batch.fail_unresolved(f);
        return describe(f);
      }
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // stray content of an old return
      const amqp_method_t& method = frame.payload.method;
      if (method.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_connection_close_t*>(method.decoded);
        Failure f{Cause::connection_closed, m->reply_code,
                  fmt::format("RabbitMQ closed the connection: {}", to_string(m->reply_text))};
        conn.send_connection_close_ok();
        on_connection_lost(f.text);
        batch.fail_unresolved(f);
        return describe(f);
      }
      if (frame.channel != conn.channel()) continue;  // late frames of a closed channel
      switch (method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* m = static_cast<const amqp_basic_ack_t*>(method.decoded);
          batch.confirm(m->delivery_tag, m->multiple != 0, true);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* m = static_cast<const amqp_basic_nack_t*>(method.decoded);
          batch.confirm(m->delivery_tag, m->multiple != 0, false);
          break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
          const auto* m = static_cast<const amqp_basic_return_t*>(method.decoded);
          const int code = m->reply_code;
          const std::string text = to_string(m->reply_text);
          amqp_message_t message{};
          amqp_rpc_reply_t r = amqp_read_message(conn.get(), frame.channel, &message, 0);
          if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            Failure f = failure_of(r, "reading a message returned by RabbitMQ");
            conn.mark_broken();
            on_connection_lost(f.text);
            batch.fail_unresolved(f);
            return describe(f);
          }
          std::string id;
          if (message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) id = to_string(message.properties.message_id);
          amqp_destroy_message(&message);
          batch.returned(id, code, text);
          break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* m = static_cast<const amqp_channel_close_t*>(method.decoded);
          Failure f{Cause::channel_closed, m->reply_code,
                    fmt::format("RabbitMQ closed the channel: {}", to_string(m->reply_text))};
          if (f.code == 404) pc.known_exchanges.clear();  // an exchange was deleted: check again
          conn.send_channel_close_ok(conn.channel());
          batch.fail_unresolved(f);
          try {
            conn.reopen_channel();
            pc.sync_channel();
          } catch (const AmqpError& e) {
            on_connection_lost(e.what());
          }
          return describe(f);
        }
        default:
          break;
      }
      if (batch.pending() == 0) return std::nullopt;
    }
  }

  static amqp_table_entry_t string_entry(const std::string& name, const std::string& value) {
    amqp_table_entry_t e{};
    e.key = as_bytes(name);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = as_bytes(value);
    return e;
  }
  static amqp_table_entry_t string_entry_c(const char* name, const std::string& value) {
    amqp_table_entry_t e{};
    e.key = amqp_cstring_bytes(name);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = as_bytes(value);
    return e;
  }

  // A pooled connection, or a new one; nullptr (with the reason) while the
  // broker is unreachable (then no more than one attempt per backoff period).
  std::unique_ptr<PubConnection> acquire(std::string& error) {
    {
      std::lock_guard lock(mutex_);
      if (!pool_.empty()) {
        auto pc = std::move(pool_.back());
        pool_.pop_back();
        return pc;
      }
      auto now = Clock::now();
      if (failing_ && now < next_connect_) {
        error = fmt::format("RabbitMQ at {} is unreachable ({}); reconnecting in {} ms, will be retried",
                            endpoint_.display, last_error_,
                            std::chrono::duration_cast<std::chrono::milliseconds>(next_connect_ - now).count());
        return nullptr;
      }
      if (failing_) next_connect_ = now + backoff_;  // one connecting caller at a time while failing
    }
    try {
      auto pc = std::make_unique<PubConnection>();
      pc->conn = Connection::open(endpoint_, 1);
      pc->conn->enable_confirms();
      {
        std::lock_guard lock(mutex_);
        backoff_ = kBackoffMin;
        next_connect_ = {};
        failing_ = false;
      }
      if (!healthy_.exchange(true)) spdlog::info("RabbitMQ publisher: connected to {} again", endpoint_.display);
      return pc;
    } catch (const AmqpError& e) {
      std::lock_guard lock(mutex_);
      last_error_ = e.what();
      failing_ = true;
      next_connect_ = Clock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, kBackoffMax);
      error = fmt::format("{}; will be retried", e.what());
      if (healthy_.exchange(false)) spdlog::warn("RabbitMQ publisher: {}", e.what());
      return nullptr;
    }
  }

  void release(std::unique_ptr<PubConnection> pc) {
    if (pc->conn->broken()) {
      // Dropped: the destructor frees it without the close handshake.
      return;
    }
    std::lock_guard lock(mutex_);
    pool_.push_back(std::move(pc));
  }

  void on_connection_lost(const std::string& why) {
    if (healthy_.exchange(false)) {
      spdlog::warn("RabbitMQ publisher: connection lost ({}); reconnecting on the next publish", why);
    }
    // Idle pooled connections to the same broker are likely dead too.
    std::vector<std::unique_ptr<PubConnection>> stale;
    std::lock_guard lock(mutex_);
    last_error_ = why;
    stale.swap(pool_);
    for (auto& pc : stale) pc->conn->mark_broken();
  }

  Endpoint endpoint_;
  std::atomic<bool> healthy_{true};
  std::mutex mutex_;
  std::vector<std::unique_ptr<PubConnection>> pool_;
  Clock::time_point next_connect_{};
  std::chrono::milliseconds backoff_{kBackoffMin};
  std::string last_error_;
  bool failing_ = false;  // the last connect attempt failed: throttle to one per backoff
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties) {
  return std::make_unique<RabbitPublisher>(parse_endpoint(url, properties, 0));
}

}  // namespace txbox::rabbitmq
