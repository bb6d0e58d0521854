// RabbitMQ publisher: a pool of connections, each with one confirm-mode
// channel. start() takes a connection from the pool and publishes the batch
// on it; the PendingPublish owns the connection until wait() has read the
// broker's basic.ack / basic.nack / basic.return for every message (or the
// deadline passed), then gives it back, or drops it when confirms are still
// outstanding or the connection broke.
//
// After the broker closes the channel (one message too large, an exchange
// deleted, an access refused), the messages that were unconfirmed on it are
// re-published one at a time on a fresh channel ("isolation") until the one
// that closes the channel on its own is found; only that one gets the
// channel's error. Nothing of a batch is re-sent after a connection loss.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "batch.hpp"
#include "connection.hpp"
#include "destination.hpp"
#include "errors.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::rabbitmq {

namespace {

using namespace detail;
using brokers::Message;
using brokers::PublishResult;

// While publishing, read what the broker sent (confirms, a channel.close,
// connection.blocked) every this many messages or payload bytes, so a
// closed channel or an alarm stops the batch early.
constexpr std::size_t kDrainEveryMessages = 64;
constexpr std::size_t kDrainEveryBytes = 1 << 20;
// After connection.blocked, how long to keep reading confirms of messages
// the broker read before it blocked.
constexpr milliseconds kBlockedGrace{250};
constexpr const char* kProbeMessageId = "txbox-probe";

milliseconds until(Clock::time_point deadline) {
  return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
}

// One pooled connection and what the publisher knows about it.
struct PubConnection {
  std::unique_ptr<Connection> conn;
  amqp_channel_t tag_channel = 0;
  uint64_t next_tag = 1;                  // delivery tag of the next publish on the channel
  std::set<std::string> known_exchanges;  // passively checked to exist
  bool blocked = false;                   // connection.blocked seen, no unblocked since
  std::string blocked_reason;
  bool pooled = false;                    // has been idle in the pool (may have died there)
  std::optional<uint64_t> probe_tag;      // parked: the probe message the blocked broker has not read

  // Delivery tags restart at 1 on every channel.
  void sync_channel() {
    if (conn->channel() != tag_channel) {
      tag_channel = conn->channel();
      next_tag = 1;
    }
  }
};

// The connections of one publisher and what it knows about the broker.
// Shared by the publisher and its pending batches (a batch may outlive it).
class Pool {
 public:
  explicit Pool(Endpoint endpoint) : endpoint_(std::move(endpoint)) {}

  const Endpoint& endpoint() const noexcept { return endpoint_; }
  bool healthy() const noexcept { return reachable_.load() && !blocked_.load(); }

  // A pooled connection, or a new one. With `throttled`, while the broker is
  // unreachable at most one caller per backoff period connects; the others
  // fail at once. Throws AmqpError.
  std::unique_ptr<PubConnection> acquire(bool throttled, std::optional<milliseconds> connect_timeout = {}) {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        auto pc = std::move(idle_.back());
        idle_.pop_back();
        return pc;
      }
      auto now = Clock::now();
      if (throttled && failing_ && now < next_connect_) {
        throw AmqpError({Cause::unreachable, 0,
                         fmt::format("RabbitMQ at {} is unreachable ({}); next connection attempt in {} ms",
                                     endpoint_.display, last_error_,
                                     std::chrono::duration_cast<milliseconds>(next_connect_ - now).count())});
      }
      if (failing_) next_connect_ = now + backoff_;  // one connecting caller at a time while failing
    }
    try {
      auto pc = std::make_unique<PubConnection>();
      pc->conn =
          Connection::open(endpoint_, 1, {.publisher = true, .connect_timeout = connect_timeout, .confirms = true});
      pc->sync_channel();
      {
        std::lock_guard lock(mutex_);
        backoff_ = kBackoffMin;
        next_connect_ = {};
        failing_ = false;
      }
      if (!reachable_.exchange(true)) spdlog::info("RabbitMQ publisher: connected to {} again", endpoint_.display);
      return pc;
    } catch (const AmqpError& e) {
      {
        std::lock_guard lock(mutex_);
        last_error_ = e.failure().text;
        failing_ = true;
        next_connect_ = Clock::now() + backoff_;
        backoff_ = std::min(backoff_ * 2, kBackoffMax);
      }
      if (reachable_.exchange(false)) spdlog::warn("RabbitMQ publisher: {}", e.what());
      throw;
    }
  }

  // Back to the pool when `reusable`, else closed (without the close
  // handshake when the broker is not reading: blocked).
  void release(std::unique_ptr<PubConnection> pc, bool reusable) {
    if (!pc) return;
    if (reusable && !pc->conn->broken()) {
      pc->pooled = true;
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(pc));
      return;
    }
    if (pc->blocked) pc->conn->mark_broken();
  }

  void connection_lost(const std::string& why) {
    if (reachable_.exchange(false)) {
      spdlog::warn("RabbitMQ publisher: connection lost ({}); reconnecting on the next publish", why);
    }
    // Idle connections to the same broker are likely dead too.
    std::vector<std::unique_ptr<PubConnection>> stale;
    {
      std::lock_guard lock(mutex_);
      last_error_ = why;
      stale.swap(idle_);
      if (parked_) stale.push_back(std::move(parked_));
    }
    for (auto& pc : stale) pc->conn->mark_broken();
  }

  // The connection a probe found blocked, its probe message unread by the
  // broker: the next probe looks at it (connection.unblocked, then the
  // probe's confirm) instead of opening one more connection that the
  // blocked broker would hold until the alarm clears. At most one; batches
  // never get it.
  void park(std::unique_ptr<PubConnection> pc) {
    std::unique_ptr<PubConnection> previous;
    {
      std::lock_guard lock(mutex_);
      previous = std::move(parked_);
      parked_ = std::move(pc);
    }
    if (previous) previous->conn->mark_broken();
  }
  std::unique_ptr<PubConnection> take_parked() {
    std::lock_guard lock(mutex_);
    return std::move(parked_);
  }

  void blocked(const std::string& reason) {
    if (!blocked_.exchange(true)) {
      spdlog::warn("RabbitMQ publisher: {} blocked the connection ({}): a memory or disk alarm; publishing "
                   "waits until it clears",
                   endpoint_.display, reason);
    }
  }
  // The broker reads and confirms again (connection.unblocked, a probe or
  // a batch confirmed on a connection that is not blocked).
  void unblocked() {
    if (blocked_.exchange(false)) spdlog::info("RabbitMQ publisher: {} accepts messages again", endpoint_.display);
  }

 private:
  const Endpoint endpoint_;
  std::atomic<bool> reachable_{true};
  std::atomic<bool> blocked_{false};
  std::mutex mutex_;
  std::vector<std::unique_ptr<PubConnection>> idle_;
  std::unique_ptr<PubConnection> parked_;
  Clock::time_point next_connect_{};
  milliseconds backoff_{kBackoffMin};
  std::string last_error_;
  bool failing_ = false;  // the last connect attempt failed: throttle to one per backoff
};


// Publishing one batch on one connection: sending, reading the broker's
// answers into the Batch, isolation after a closed channel.
class Session {
 public:
  enum class Event {
    idle,            // nothing (more) to read before the time limit
    done,            // the caller's condition holds
    channel_closed,  // the broker closed the channel (channel_failure())
    blocked,         // connection.blocked
    lost,            // the connection is gone; every unsettled message failed
  };

  Session(Pool& pool, PubConnection& pc, Batch& batch) : pool_(pool), pc_(pc), batch_(batch) {}

  bool lost() const noexcept { return lost_; }
  // Published messages whose confirms will not be read (blocked, deadline):
  // the connection must not be reused.
  bool abandoned_confirms() const noexcept { return abandoned_confirms_ || batch_.in_flight() > 0; }
  bool published_any() const noexcept { return published_any_; }
  const Failure& channel_failure() const noexcept { return channel_failure_; }

  // Reads frames until `done` holds (checked after each frame) or nothing
  // arrives before `limit`; reads what is already there when `limit` has
  // passed.
  Event pump(Clock::time_point limit, const std::function<bool()>& done = {}) {
    Connection& conn = *pc_.conn;
    for (;;) {
      if (lost_) return Event::lost;
      if (done && done()) return Event::done;
      amqp_maybe_release_buffers(conn.get());
      timeval tv = to_timeval(until(limit));
      amqp_frame_t frame{};
      int status = amqp_simple_wait_frame_noblock(conn.get(), &frame, &tv);
      if (status == AMQP_STATUS_TIMEOUT) return Event::idle;
      if (status != AMQP_STATUS_OK) {
        return lose({Cause::library, status,
                     fmt::format("waiting for confirms from RabbitMQ at {}: {}", pool_.endpoint().display,
                                 amqp_error_string2(status))});
      }
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // stray content of an old return
      const amqp_method_t& method = frame.payload.method;
      if (frame.channel == 0) {
        switch (method.id) {
          case AMQP_CONNECTION_CLOSE_METHOD: {
            const auto* m = static_cast<const amqp_connection_close_t*>(method.decoded);
            Failure f{Cause::connection_closed, m->reply_code,
                      fmt::format("RabbitMQ at {} closed the connection: {}", pool_.endpoint().display,
                                  to_string(m->reply_text))};
            conn.send_connection_close_ok();
            return lose(f);
          }
          case AMQP_CONNECTION_BLOCKED_METHOD: {
            const auto* m = static_cast<const amqp_connection_blocked_t*>(method.decoded);
            pc_.blocked = true;
            pc_.blocked_reason = to_string(m->reason);
            pool_.blocked(pc_.blocked_reason);
            return Event::blocked;
          }
          case AMQP_CONNECTION_UNBLOCKED_METHOD:
            pc_.blocked = false;
            pool_.unblocked();
            continue;
          default:
            continue;
        }
      }
      if (frame.channel != conn.channel() || !conn.channel_usable()) continue;  // a closed channel's late frames
      switch (method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* m = static_cast<const amqp_basic_ack_t*>(method.decoded);
          batch_.confirm(m->delivery_tag, m->multiple != 0, true);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* m = static_cast<const amqp_basic_nack_t*>(method.decoded);
          batch_.confirm(m->delivery_tag, m->multiple != 0, false);
          break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
          const auto* m = static_cast<const amqp_basic_return_t*>(method.decoded);
          const int code = m->reply_code;
          const std::string text = to_string(m->reply_text);
          amqp_message_t message{};
          amqp_rpc_reply_t r = amqp_read_message(conn.get(), frame.channel, &message, 0);
          if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            return lose(failure_of(r, "reading a message returned by RabbitMQ"));
          }
          std::string id;
          if (message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) id = to_string(message.properties.message_id);
          amqp_destroy_message(&message);
          batch_.returned(id, code, text);
          break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* m = static_cast<const amqp_channel_close_t*>(method.decoded);
          channel_failure_ = {Cause::channel_closed, m->reply_code,
                              fmt::format("RabbitMQ closed the channel: {}", to_string(m->reply_text))};
          if (channel_failure_.code == 404) pc_.known_exchanges.clear();  // deleted since checked: check again
          conn.channel_closed_by_broker();
          const std::size_t unconfirmed = batch_.in_flight();
          batch_.channel_closed(channel_failure_);
          if (!isolating_) {
            spdlog::warn("RabbitMQ publisher: {} (reply code {}) with {} message(s) of the batch unconfirmed; "
                         "re-publishing them one at a time to find the one it was about",
                         channel_failure_.text, channel_failure_.code, unconfirmed);
          }
          return Event::channel_closed;
        }
        default:
          break;
      }
    }
  }

  // Reopens the channel after the broker closed it.
  bool ensure_channel() {
    if (lost_) return false;
    try {
      pc_.conn->ensure_channel();
      pc_.sync_channel();
      return true;
    } catch (const AmqpError& e) {
      lose(e.failure());
      return false;
    }
  }

  // Passive declare of the exchanges the messages `wanted` selects that this
  // connection has not seen yet: a missing one fails its messages
  // (permanently) before they are sent instead of closing the channel under
  // the batch. Only with nothing in flight (a failed check replaces the
  // channel). False when the connection was lost.
  bool check_exchanges(const std::function<bool(std::size_t)>& wanted) {
    Connection& conn = *pc_.conn;
    for (std::size_t i = 0; i < batch_.size() && !lost_; ++i) {
      if (!wanted(i)) continue;
      const std::string& ex = batch_.target(i).exchange;
      if (ex.empty() || pc_.known_exchanges.contains(ex)) continue;
      if (auto missing = missing_exchanges_.find(ex); missing != missing_exchanges_.end()) {
        batch_.fail(i, missing->second);  // checked for an earlier message of this batch
        continue;
      }
      if (!ensure_channel()) return false;
      amqp_exchange_declare(conn.get(), conn.channel(), as_bytes(ex), amqp_cstring_bytes("direct"), /*passive=*/1,
                            0, 0, 0, amqp_empty_table);
      try {
        conn.check_rpc(fmt::format("checking that exchange '{}' exists", ex));
        pc_.known_exchanges.insert(ex);
      } catch (const AmqpError& e) {
        if (conn.broken()) {
          lose(e.failure());
          return false;
        }
        pc_.sync_channel();  // check_rpc opened a new channel
        Failure f = e.failure();
        if (f.code == 404) {
          f.text = fmt::format("exchange '{}' does not exist in vhost '{}'", ex, pool_.endpoint().vhost);
          missing_exchanges_.emplace(ex, f);
        }
        for (std::size_t j = i; j < batch_.size(); ++j) {
          if (batch_.target(j).exchange == ex && wanted(j)) batch_.fail(j, f);
        }
      }
    }
    return !lost_;
  }

  // basic.publish of message `i` (persistent, mandatory), or of the probe
  // (transient, not mandatory: RabbitMQ drops it). False when the
  // connection broke.
  bool publish(std::size_t i, bool probe = false) {
    Connection& conn = *pc_.conn;
    const Message& m = batch_.message(i);
    const Target& t = batch_.target(i);
    entries_.clear();
    const std::string* content_type = nullptr;
    for (const auto& [name, value] : m.headers) {
      if (name == brokers::wire::kMessageId || name == brokers::wire::kMessageKey) continue;  // ours below
      if (name == brokers::wire::kContentType) content_type = &value;
      entries_.push_back(utf8_entry(as_bytes(name), as_bytes(value)));
    }
    entries_.push_back(utf8_entry(amqp_cstring_bytes(brokers::wire::kMessageId.data()), as_bytes(m.message_id)));
    if (m.key) entries_.push_back(utf8_entry(amqp_cstring_bytes(brokers::wire::kMessageKey.data()), as_bytes(*m.key)));
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.delivery_mode = probe ? AMQP_DELIVERY_NONPERSISTENT : AMQP_DELIVERY_PERSISTENT;
    props.message_id = as_bytes(m.message_id);
    props.headers.num_entries = static_cast<int>(entries_.size());
    props.headers.entries = entries_.data();
    if (content_type) {
      props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
      props.content_type = as_bytes(*content_type);
    }
    int status = amqp_basic_publish(conn.get(), conn.channel(), as_bytes(t.exchange), as_bytes(t.routing_key),
                                    /*mandatory=*/probe ? 0 : 1, /*immediate=*/0, &props, as_bytes(m.payload));
    published_any_ = true;
    if (status == AMQP_STATUS_OK) {
      batch_.published(i, pc_.next_tag++);
      return true;
    }
    Failure f{Cause::library, status,
              fmt::format("publishing to {} on {}: {}", where(t), pool_.endpoint().display, amqp_error_string2(status))};
    if (status == AMQP_STATUS_TABLE_TOO_BIG || status == AMQP_STATUS_BAD_AMQP_DATA) {
      // refuse_reason() should have caught it. Part of the message may be
      // on the wire: the connection cannot be used any more, but the broker
      // is fine, so the others are transient, not an outage.
      if (status == AMQP_STATUS_TABLE_TOO_BIG) batch_.fail(i, f);
      conn.mark_broken();
      lost_ = true;
      batch_.fail_unsettled({Cause::connection_closed, 505,
                             fmt::format("the connection was dropped after a message to {} could not be encoded ({})",
                                         where(t), amqp_error_string2(status))});
      return false;
    }
    lose(f);
    return false;
  }

  // Publishes the unsent messages in batch order, reading the broker's
  // answers every few messages; stops early when the channel closes, the
  // connection blocks or breaks.
  void publish_unsent() {
    auto unsent = [&](std::size_t i) { return batch_.state(i) == Batch::State::unsent; };
    if (!ensure_channel() || !check_exchanges(unsent)) return;
    std::size_t messages = 0, bytes = 0;
    for (std::size_t i = 0; i < batch_.size(); ++i) {
      if (!unsent(i)) continue;  // settled, or held back meanwhile
      if (!publish(i)) return;
      bytes += batch_.message(i).payload.size();
      if (++messages >= kDrainEveryMessages || bytes >= kDrainEveryBytes) {
        messages = bytes = 0;
        Event e = pump(Clock::now());
        if (e != Event::idle && e != Event::done) return;
      }
    }
  }

  // Re-publishes the first suspect alone and waits for its outcome. If it
  // closes the channel, it was the cause: it gets the channel's error, and
  // the other suspects go back to being published the normal way.
  void isolate_next(Clock::time_point deadline) {
    std::size_t i = *batch_.first(Batch::State::suspect);
    if (!ensure_channel() || !check_exchanges([&](std::size_t j) { return j == i; })) return;
    if (batch_.state(i) != Batch::State::suspect) return;  // its exchange is missing
    if (!publish(i)) return;
    isolating_ = true;
    Event e = pump(deadline, [&] { return batch_.state(i) == Batch::State::settled; });
    isolating_ = false;
    if (e == Event::channel_closed) {
      spdlog::warn("RabbitMQ publisher: message {} to {} closed the channel on its own: {}",
                   batch_.message(i).message_id, where(batch_.target(i)), describe(channel_failure_));
      batch_.fail(i, channel_failure_);
      batch_.suspects_to_unsent();
    }
  }

  // Drives the batch to an outcome for every message, or to the deadline.
  void run(Clock::time_point deadline) {
    for (;;) {
      if (lost_) return;
      if (pc_.blocked) {
        // Confirms of what the broker read before it blocked may still come.
        pump(std::min(deadline, Clock::now() + kBlockedGrace), [&] { return batch_.in_flight() == 0 || !pc_.blocked; });
        if (lost_) return;
        if (!pc_.blocked) continue;  // connection.unblocked meanwhile
        if (batch_.in_flight() > 0) abandoned_confirms_ = true;
        batch_.fail_unsettled(blocked_failure());
        return;
      }
      if (batch_.in_flight() > 0) {
        if (pump(deadline, [&] { return batch_.in_flight() == 0; }) == Event::idle) return;
        continue;
      }
      const bool suspects = batch_.first(Batch::State::suspect).has_value();
      const bool unsent = batch_.first(Batch::State::unsent).has_value();
      if (!suspects && !unsent) return;
      if (Clock::now() >= deadline) return;
      if (suspects) {
        isolate_next(deadline);
      } else {
        publish_unsent();
      }
    }
  }

  Failure blocked_failure() const {
    return {Cause::blocked, 0,
            fmt::format("RabbitMQ at {} blocked the connection ({})", pool_.endpoint().display,
                        pc_.blocked_reason.empty() ? "no reason given" : pc_.blocked_reason)};
  }

 private:
  Event lose(const Failure& f) {
    pc_.conn->mark_broken();
    lost_ = true;
    pool_.connection_lost(f.text);
    batch_.fail_unsettled(f);
    return Event::lost;
  }

  Pool& pool_;
  PubConnection& pc_;
  Batch& batch_;
  Failure channel_failure_;
  bool lost_ = false;
  bool isolating_ = false;  // one message alone on the channel
  bool abandoned_confirms_ = false;
  bool published_any_ = false;
  std::vector<amqp_table_entry_t> entries_;  // headers of the message being published
  std::map<std::string, Failure> missing_exchanges_;  // found missing during this batch
};

// A connection for a new batch or a probe, with what arrived while it was
// idle read: connection.blocked / unblocked, or that it died in the pool (a
// broker restart, a heartbeat timeout); then, nothing having been sent on
// it yet, one new connection is tried instead. Throws AmqpError.
std::unique_ptr<PubConnection> acquire_live(Pool& pool, bool throttled,
                                            std::optional<milliseconds> connect_timeout = {}) {
  for (;;) {
    auto pc = pool.acquire(throttled, connect_timeout);
    Batch nothing(std::span<const Message>{});
    Session idle_check(pool, *pc, nothing);
    if (idle_check.pump(Clock::now()) != Session::Event::lost) return pc;
    if (!pc->pooled) throw AmqpError({Cause::library, AMQP_STATUS_CONNECTION_CLOSED,
                                      fmt::format("RabbitMQ at {} closed a new connection at once",
                                                  pool.endpoint().display)});
  }
}

class RabbitPendingPublish final : public brokers::PendingPublish {
 public:
  RabbitPendingPublish(std::shared_ptr<Pool> pool, std::span<const Message> messages)
      : pool_(std::move(pool)), batch_(messages) {}

  ~RabbitPendingPublish() override {
    // Abandoned before wait(): late confirms must not reach the next batch.
    const bool reusable = session_ && !session_->published_any() && !session_->lost();
    pool_->release(std::move(pc_), reusable);
  }

  void start() {
    for (std::size_t i = 0; i < batch_.size(); ++i) {
      if (auto why = refuse_reason(batch_.message(i), batch_.target(i), SIZE_MAX)) {
        batch_.fail(i, {Cause::refused, 0, *why});
      }
    }
    if (!batch_.first(Batch::State::unsent)) return;
    try {
      pc_ = acquire_live(*pool_, /*throttled=*/true);
    } catch (const AmqpError& e) {
      batch_.fail_unsettled(e.failure());
      return;
    }
    session_.emplace(*pool_, *pc_, batch_);
    if (pc_->blocked) return;  // wait() fails the batch as an outage
    const std::size_t frame_max = pc_->conn->frame_max();
    for (std::size_t i = 0; i < batch_.size(); ++i) {
      if (batch_.state(i) != Batch::State::unsent) continue;
      if (auto why = refuse_reason(batch_.message(i), batch_.target(i), frame_max)) {
        batch_.fail(i, {Cause::refused, 0, *why});
      }
    }
    session_->publish_unsent();
  }

  std::vector<PublishResult> wait(Clock::time_point deadline) override {
    if (session_ && !waited_) {
      session_->run(deadline);
      // Confirms on a connection that is not blocked: no alarm (any more).
      if (!session_->lost() && !pc_->blocked && batch_.confirmed_count() > 0) pool_->unblocked();
    }
    waited_ = true;
    auto results = batch_.results(
        "no confirm from RabbitMQ before the publish deadline: the broker is slow or overloaded; will be retried");
    const bool reusable = session_ && !session_->lost() && !session_->abandoned_confirms();
    pool_->release(std::move(pc_), reusable);
    return results;
  }

 private:
  std::shared_ptr<Pool> pool_;
  Batch batch_;
  std::unique_ptr<PubConnection> pc_;
  std::optional<Session> session_;  // refers to pc_ and batch_
  bool waited_ = false;
};

// A batch without anything to send.
class EmptyPendingPublish final : public brokers::PendingPublish {
 public:
  std::vector<PublishResult> wait(Clock::time_point) override { return {}; }
};

class RabbitPublisher final : public brokers::Publisher {
 public:
  explicit RabbitPublisher(Endpoint endpoint) : pool_(std::make_shared<Pool>(std::move(endpoint))) {
    // Connect once now so a refused login fails at startup; an unreachable
    // broker is only logged (start() keeps retrying).
    try {
      pool_->release(pool_->acquire(/*throttled=*/false), true);
    } catch (const AmqpError& e) {
      const Failure& f = e.failure();
      if (f.cause == Cause::connection_closed && (f.code == 403 || f.code == 530)) {
        throw brokers::BrokerError(
            ErrorKind::config,
            fmt::format("RabbitMQ publisher for {}: {}", pool_->endpoint().display, e.what()));
      }
      spdlog::warn("RabbitMQ publisher: {} — will retry on publish", e.what());
    }
  }

  std::unique_ptr<brokers::PendingPublish> start(std::span<const Message> messages) override {
    if (messages.empty()) return std::make_unique<EmptyPendingPublish>();
    auto pending = std::make_unique<RabbitPendingPublish>(pool_, messages);
    pending->start();
    return pending;
  }

  bool healthy() const override { return pool_->healthy(); }

  // Publishes one empty, transient, non-mandatory message to the default
  // exchange with an empty routing key (RabbitMQ drops it) and waits for
  // its confirm. Opening a channel is not enough: RabbitMQ blocks a
  // connection during an alarm only once it publishes.
  bool probe(milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    try {
      if (auto parked = pool_->take_parked()) return probe_parked(std::move(parked), deadline);
      auto pc = acquire_live(*pool_, /*throttled=*/false, std::min(pool_->endpoint().connect_timeout, timeout));
      if (pc->blocked) {
        pool_->release(std::move(pc), true);  // nothing outstanding on it
        return false;
      }
      Batch batch(probe_batch());
      Session session(*pool_, *pc, batch);
      pc->conn->set_rpc_timeout(std::max(until(deadline), milliseconds(1)));
      if (!session.ensure_channel()) return false;
      const uint64_t tag = pc->next_tag;
      if (!session.publish(0, /*probe=*/true)) return false;
      return settle_probe(std::move(pc), session, batch, tag, deadline);
    } catch (const std::exception& e) {  // AmqpError (unreachable), allocation failures
      spdlog::debug("RabbitMQ publisher: probe failed: {}", e.what());
      return false;
    }
  }

 private:
  static std::span<const Message> probe_batch() {
    static const Message probe_message{kProbeMessageId, "", std::nullopt, "", {}};
    return {&probe_message, 1};
  }

  // A parked connection: still blocked, false at once; unblocked, its old
  // probe message's confirm answers.
  bool probe_parked(std::unique_ptr<PubConnection> pc, Clock::time_point deadline) {
    const uint64_t tag = *pc->probe_tag;
    Batch batch(probe_batch());
    Session session(*pool_, *pc, batch);
    batch.published(0, tag);
    if (session.pump(Clock::now()) == Session::Event::lost) return false;
    if (pc->blocked) {
      pool_->park(std::move(pc));
      return false;
    }
    return settle_probe(std::move(pc), session, batch, tag, deadline);
  }

  // Waits for the probe message's outcome and decides where the connection goes.
  bool settle_probe(std::unique_ptr<PubConnection> pc, Session& session, Batch& batch, uint64_t tag,
                    Clock::time_point deadline) {
    auto e = session.pump(deadline, [&] { return batch.state(0) == Batch::State::settled; });
    if (session.lost()) return false;
    pc->conn->set_rpc_timeout(kRpcTimeout);
    if (pc->blocked) {  // the broker stopped reading: keep the connection for the next probe
      pc->probe_tag = tag;
      pool_->park(std::move(pc));
      return false;
    }
    // A channel.close answers too: the broker read the message (a user
    // without write permission on the default exchange).
    const bool answered =
        (e == Session::Event::done && batch.confirmed_count() == 1) || e == Session::Event::channel_closed;
    const bool settled = e == Session::Event::done || e == Session::Event::channel_closed;
    if (answered) pool_->unblocked();
    pc->probe_tag.reset();
    pool_->release(std::move(pc), settled);  // a probe still unconfirmed at the timeout: dropped
    return answered;
  }

  std::shared_ptr<Pool> pool_;
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties) {
  return std::make_unique<RabbitPublisher>(parse_endpoint(url, properties, 0));
}

}  // namespace txbox::rabbitmq
