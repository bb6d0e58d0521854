// Redis Streams publisher: start() writes a batch as one pipeline of EVALSHA
// calls of the dedup-and-XADD script on a pooled connection; wait() reads and
// checks every reply. The messages of one key are chained (batch_plan.hpp).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

#include "batch_plan.hpp"
#include "connection.hpp"
#include "errors.hpp"
#include "txbox/redis/redis.hpp"

namespace txbox::redis {

namespace {
using namespace detail;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// KEYS[1] = the message's dedup key, KEYS[2] = the stream, KEYS[3] (only
// when the message has one) = the dedup key of the previous message of the
// same key in the batch. ARGV[1] = ttl seconds, ARGV[2] = MAXLEN (0 = none),
// ARGV[3..] = field, value, ... Returns the new entry id, or 0 when the
// message was already stored within the ttl.
// The type check comes first. A duplicate is confirmed before the chain is
// looked at: it is in the stream whatever happened to its predecessor. The
// chain check refuses a message whose predecessor is not stored, so a key's
// later message never lands after an earlier one failed. SET is the first
// write: under maxmemory it fails with OOM before anything changed. A failed
// XADD removes the dedup key again, so a rejected message is never
// remembered as stored.
constexpr const char* kScript = R"lua(
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[2] .. ' holds a ' .. t .. ', not a stream')
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('TXBOXCHAIN the previous message of this key in the batch (' .. KEYS[3] .. ') is not stored')
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
local ok, id
if ARGV[2] ~= '0' then
  ok, id = pcall(redis.call, 'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  ok, id = pcall(redis.call, 'XADD', KEYS[2], '*', unpack(ARGV, 3))
end
if not ok then redis.call('DEL', KEYS[1]) end
return id
)lua";

// DEL of a key that never exists: a write command, so it is refused exactly
// when the server refuses all writes (LOADING, READONLY, MISCONF,
// MASTERDOWN, NOREPLICAS), but not under OOM (DEL frees memory).
constexpr const char* kProbeKey = "txbox:dedup:probe";

std::string headers_json(const brokers::Headers& headers) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& [name, value] : headers) object[name] = value;
  return object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// A message without a message id cannot be deduplicated, but the chain
// needs a key that records it was stored: a one-off random id stands in.
std::string one_off_id() {
  thread_local std::mt19937_64 random(std::random_device{}());
  return fmt::format("~{:016x}{:016x}", random(), random());
}

bool has_code(const redisReply* reply, std::string_view code) {
  auto t = text(reply);
  return t.starts_with(code) && (t.size() == code.size() || t[code.size()] == ' ');
}

// A connection and the SHA1 of the script it loaded.
struct Connection {
  ContextPtr context;
  std::string sha;
  explicit operator bool() const { return context != nullptr; }
};

// What the publisher and its batches in flight share; a batch keeps it
// alive, so a PendingPublish may outlive its Publisher.
class Shared {
 public:
  Shared(Endpoint endpoint, long long maxlen, long long ttl)
      : endpoint(std::move(endpoint)), maxlen(std::to_string(maxlen)), ttl(std::to_string(ttl)) {}

  const Endpoint endpoint;
  const std::string maxlen, ttl;

  // A new connection with the script loaded (bypasses the reconnect backoff).
  Connection open(milliseconds timeout, Failure& failure) {
    auto context = connect(endpoint, timeout, failure);
    if (!context) return connected({}, failure);
    auto reply = command(context.get(), {"SCRIPT", "LOAD", kScript}, failure);
    if (!reply) {
      failure.kind = Failure::Kind::unreachable;  // still the handshake: nothing of a batch was sent
      return connected({}, failure);
    }
    if (is_error(reply.get()) || reply->type != REDIS_REPLY_STRING) {
      failure = reply_failure(reply.get());
      return connected({}, failure);
    }
    return connected({std::move(context), std::string(text(reply.get()))}, failure);
  }

  // An idle connection, or a new one unless the reconnect backoff runs.
  Connection acquire(Failure& failure) {
    if (auto connection = take_idle()) return connection;
    {
      std::lock_guard lock(mutex_);
      if (Clock::now() < next_connect_) {
        failure = last_connect_failure_;
        return {};
      }
    }
    return open(endpoint.connect_timeout, failure);
  }

  Connection take_idle() {
    std::lock_guard lock(mutex_);
    if (idle_.empty()) return {};
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    return connection;
  }

  // Only for a connection whose every reply was read.
  void release(Connection connection) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(connection));
  }

  // A connection was lost: the server went away or restarted, so the idle
  // ones are most likely dead too.
  void drop_idle() {
    std::lock_guard lock(mutex_);
    idle_.clear();
  }

  bool healthy() const { return healthy_.load(); }

  void report(bool healthy, const std::string& reason) {
    if (healthy_.exchange(healthy) == healthy) return;
    if (healthy)
      spdlog::info("Redis publisher: {} reachable again, writes confirmed", endpoint.address());
    else
      spdlog::warn("Redis publisher: {} unavailable: {}", endpoint.address(), reason);
  }

 private:
  Connection connected(Connection connection, const Failure& failure) {
    std::lock_guard lock(mutex_);
    if (connection) {
      connect_delay_ = kFirstDelay;
      next_connect_ = {};
    } else {
      last_connect_failure_ = failure;
      next_connect_ = Clock::now() + connect_delay_;
      connect_delay_ = std::min(connect_delay_ * 2, kMaxDelay);
    }
    return connection;
  }

  static constexpr milliseconds kFirstDelay{200};
  static constexpr milliseconds kMaxDelay{5000};

  std::mutex mutex_;
  std::vector<Connection> idle_;
  Clock::time_point next_connect_{};
  milliseconds connect_delay_{kFirstDelay};
  Failure last_connect_failure_;
  std::atomic<bool> healthy_{true};
};

class RedisPendingPublish final : public brokers::PendingPublish {
 public:
  // Does the work of start(): plans the batch, takes a connection and writes
  // the whole pipeline out.
  RedisPendingPublish(std::shared_ptr<Shared> shared, std::span<const brokers::Message> messages)
      : shared_(std::move(shared)), messages_(messages), results_(messages.size()),
        outcomes_(messages.size(), FirstRound::removed), dedup_keys_(messages.size()) {
    std::vector<bool> sent(messages_.size(), false);
    for (size_t i = 0; i < messages_.size(); ++i) {
      const auto& m = messages_[i];
      if (auto refusal = destination_refusal(m.destination)) {
        results_[i] = {false, brokers::ErrorClass::permanent, std::move(*refusal)};
        continue;
      }
      sent[i] = true;
      sent_.push_back(i);
      dedup_keys_[i] = dedup_key(m.destination, m.message_id.empty() ? one_off_id() : m.message_id);
    }
    if (sent_.empty()) return;
    auto predecessors = detail::predecessors(messages_, sent);

    Failure failure;
    connection_ = shared_->acquire(failure);
    if (!connection_) {
      start_failure_ = failure;
      return;
    }
    // The write waits for the server to take the bytes, no longer than a
    // connect may take.
    set_timeout(connection_.context.get(), shared_->endpoint.connect_timeout);
    for (size_t i : sent_) append(connection_.context.get(), command_for(i, predecessors[i]));
    if (!flush(connection_.context.get(), failure)) {
      start_failure_ = failure;
      connection_ = {};
      shared_->drop_idle();
    }
  }

  // Without wait(): connection_ is destroyed with its unread replies (the
  // socket is closed), never returned to the pool.
  ~RedisPendingPublish() override = default;

  std::vector<brokers::PublishResult> wait(Clock::time_point deadline) override {
    if (waited_) return results_;
    waited_ = true;
    if (start_failure_) {
      fail(sent_, *start_failure_);
    } else if (!sent_.empty()) {
      read_replies(sent_, deadline);
      if (connection_) second_round(deadline);
      if (connection_) shared_->release(std::move(connection_));
    }
    report_health();
    return results_;
  }

 private:
  std::vector<std::string> command_for(size_t i, std::optional<size_t> predecessor) const {
    const auto& m = messages_[i];
    std::vector<std::string> argv{"EVALSHA", connection_.sha, predecessor ? "3" : "2", dedup_keys_[i],
                                  m.destination};
    if (predecessor) argv.push_back(dedup_keys_[*predecessor]);
    argv.insert(argv.end(), {shared_->ttl, shared_->maxlen, "message-id", m.message_id});
    if (m.key) argv.insert(argv.end(), {"key", *m.key});
    argv.insert(argv.end(), {"payload", m.payload, "headers", headers_json(m.headers)});
    return argv;
  }

  // Reads one reply per message of `order` (sent in that order). On a lost
  // connection or the deadline, the messages still without a reply fail and
  // the connection is dropped: nothing is sent again on another one.
  void read_replies(const std::vector<size_t>& order, Clock::time_point deadline) {
    redisContext* context = connection_.context.get();
    for (size_t p = 0; p < order.size(); ++p) {
      const size_t i = order[p];
      Failure failure;
      auto reply = get_reply_before(context, deadline, failure);
      if (!reply) {
        if (failure.kind == Failure::Kind::timeout)
          failure.text = fmt::format("{}, {} of {} replies unread", failure.text, order.size() - p, order.size());
        fail(std::span(order).subspan(p), failure);
        if (failure.kind == Failure::Kind::lost) shared_->drop_idle();
        connection_ = {};
        return;
      }
      if (!is_error(reply.get())) {
        // An entry id (new entry) or 0 (a duplicate within the dedup window):
        // both mean the stream holds the message.
        results_[i] = {true, brokers::ErrorClass::transient, {}};
        outcomes_[i] = FirstRound::stored;
        continue;
      }
      auto c = classify(reply_failure(reply.get()), messages_[i].destination, shared_->endpoint.address());
      results_[i] = {false, c.error_class, std::move(c.description)};
      if (has_code(reply.get(), "NOSCRIPT"))
        outcomes_[i] = FirstRound::noscript;
      else if (has_code(reply.get(), kChainRefusedCode))
        outcomes_[i] = FirstRound::chain_refused;
      else if (results_[i].error_class == brokers::ErrorClass::permanent)
        outcomes_[i] = FirstRound::removed;
      else
        outcomes_[i] = FirstRound::failed;
    }
  }

  // NOSCRIPT (the script cache was flushed: reload it) and chain refusals
  // whose predecessor failed permanently or was NOSCRIPT get one more
  // round, in batch order, on the same connection.
  void second_round(Clock::time_point deadline) {
    auto resends = detail::second_round(messages_, outcomes_);
    if (resends.empty()) return;
    std::vector<size_t> order;
    for (const auto& r : resends) order.push_back(r.index);
    redisContext* context = connection_.context.get();
    const bool reload = std::any_of(order.begin(), order.end(),
                                    [&](size_t i) { return outcomes_[i] == FirstRound::noscript; });
    if (reload) {
      Failure failure;
      append(context, {"SCRIPT", "LOAD", kScript});
      auto reply = get_reply_before(context, deadline, failure);
      if (!reply || is_error(reply.get())) {
        if (reply) failure = reply_failure(reply.get());
        fail(order, failure);
        if (!reply) {
          if (failure.kind == Failure::Kind::lost) shared_->drop_idle();
          connection_ = {};
        }
        return;
      }
      connection_.sha = std::string(text(reply.get()));
    }
    for (const auto& r : resends) append(context, command_for(r.index, r.predecessor));
    // Outcomes of this round are final: a second NOSCRIPT stays a transient failure.
    read_replies(order, deadline);
  }

  void fail(std::span<const size_t> indexes, const Failure& failure) {
    for (size_t i : indexes) {
      auto c = classify(failure, messages_[i].destination, shared_->endpoint.address());
      results_[i] = {false, c.error_class, std::move(c.description)};
    }
  }

  // healthy() turns false after a batch with an outage and no confirmation
  // (a batch half confirmed before a connection loss says the server was
  // there a moment ago; the next batch tells), true after a confirmation.
  void report_health() {
    bool confirmed = false;
    const brokers::PublishResult* outage = nullptr;
    for (const auto& r : results_) {
      confirmed = confirmed || r.confirmed;
      if (!r.confirmed && r.error_class == brokers::ErrorClass::outage && !outage) outage = &r;
    }
    if (outage && !confirmed)
      shared_->report(false, outage->error);
    else if (confirmed)
      shared_->report(true, {});
  }

  std::shared_ptr<Shared> shared_;
  std::span<const brokers::Message> messages_;
  std::vector<brokers::PublishResult> results_;
  std::vector<FirstRound> outcomes_;
  std::vector<std::string> dedup_keys_;  // per message ("" when refused)
  std::vector<size_t> sent_;             // the messages in the pipeline, in order
  Connection connection_;                // empty once released or dropped
  std::optional<Failure> start_failure_;
  bool waited_ = false;
};

class RedisPublisher final : public brokers::Publisher {
 public:
  explicit RedisPublisher(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {
    // Fail fast on wrong credentials; an unreachable server is fine (the
    // relay starts anyway and connects once it is up).
    Failure failure;
    auto connection = shared_->open(shared_->endpoint.connect_timeout, failure);
    if (connection) {
      shared_->release(std::move(connection));
    } else {
      auto c = classify(failure, "", shared_->endpoint.address());
      if (c.error_class == brokers::ErrorClass::permanent) throw brokers::BrokerError(c.description, false);
      shared_->report(false, c.description);
    }
  }

  std::unique_ptr<brokers::PendingPublish> start(std::span<const brokers::Message> messages) override {
    return std::make_unique<RedisPendingPublish>(shared_, messages);
  }

  bool healthy() const override { return shared_->healthy(); }

  bool probe(milliseconds timeout) override {
    try {
      const auto deadline = Clock::now() + timeout;
      std::string reason;
      // An idle connection may have died quietly (a server restart): then
      // one more try on a new connection, within the same timeout.
      for (bool pooled : {true, false}) {
        Failure failure;
        auto connection = pooled ? shared_->take_idle() : Connection{};
        if (!pooled) {
          auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
          if (left.count() <= 0) break;
          connection = shared_->open(left, failure);
          if (!connection) {
            reason = classify(failure, "", shared_->endpoint.address()).description;
            break;
          }
        }
        if (!connection) continue;
        auto answer = ping(connection, deadline, failure);
        if (!answer) {  // the connection is dropped
          reason = classify(failure, "", shared_->endpoint.address()).description;
          if (failure.kind == Failure::Kind::lost) shared_->drop_idle();
          continue;
        }
        shared_->release(std::move(connection));
        if (answer->error_class == brokers::ErrorClass::outage) {
          reason = answer->description;
          break;
        }
        shared_->report(true, {});
        return true;
      }
      shared_->report(false, reason.empty() ? "no answer to PING within the probe timeout" : reason);
      return false;
    } catch (...) {  // never throws (bad_alloc, ...)
      return false;
    }
  }

 private:
  // PING and the write probe in one round trip. nullopt when the connection
  // failed (failure filled); otherwise the worst reply's classification
  // (transient with no text when both answered normally).
  std::optional<Classification> ping(Connection& connection, Clock::time_point deadline, Failure& failure) {
    redisContext* context = connection.context.get();
    append(context, {"PING"});
    append(context, {"DEL", kProbeKey});
    Classification worst;
    for (int k = 0; k < 2; ++k) {
      auto reply = get_reply_before(context, deadline, failure);
      if (!reply) return std::nullopt;
      if (is_error(reply.get())) {
        auto c = classify(reply_failure(reply.get()), "", shared_->endpoint.address());
        if (worst.description.empty() || c.error_class == brokers::ErrorClass::outage) worst = std::move(c);
      }
    }
    return worst;
  }

  std::shared_ptr<Shared> shared_;
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties) {
  auto endpoint = parse_endpoint(url, {"maxlen", "dedup_ttl"});
  if (!properties.empty())
    throw std::invalid_argument(fmt::format("unknown Redis publisher property '{}': the Redis adapter takes its "
                                            "options from the URL (?maxlen=N&dedup_ttl=SECONDS)",
                                            properties.begin()->first));
  auto maxlen = query_number(url, "maxlen", 0, 0);
  auto ttl = query_number(url, "dedup_ttl", 86400, 1);
  return std::make_unique<RedisPublisher>(std::make_shared<Shared>(std::move(endpoint), maxlen, ttl));
}

}  // namespace txbox::redis
