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
#include "txbox/brokers/wire.hpp"
#include "txbox/redis/redis.hpp"

namespace txbox::redis {

namespace {
using namespace detail;

// One call stores a chunk of a batch's messages, in order (one Lua call per
// message cost Redis more than the writes themselves).
// KEYS: for message i, KEYS[2i-1] = its dedup key, KEYS[2i] = its stream;
// after those, the dedup keys of predecessors. ARGV[1] = ttl seconds,
// ARGV[2] = MAXLEN (0 = none), ARGV[3] = the number of messages, then per
// message: the KEYS index of its predecessor's dedup key (0 = none), the
// number of its fields, its fields (name, value, ...).
// Returns one element per message: the new entry id, 0 when the message was
// already stored within the ttl, or an error.
// The type check comes first. SET NX of the dedup key is the first write
// (under maxmemory it fails with OOM before anything changed) and finds a
// duplicate, which is confirmed before the chain is looked at: it is in the
// stream whatever happened to its predecessor. The chain check refuses a
// message whose predecessor (earlier in this call or in an earlier call of
// the batch) is not stored, so a key's later message never lands after an
// earlier one failed. A refused or failed message's dedup key is removed
// again, so it is never remembered as stored.
constexpr const char* kScript = R"lua(
local ttl, maxlen, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local results, types, a = {}, {}, 4
-- What pcall caught, as an error reply (whatever form the server gives it).
local function failed(e)
  if type(e) == 'table' and e.err then return e end
  return redis.error_reply(tostring(e))
end
for i = 1, n do
  local dedup, stream = KEYS[2 * i - 1], KEYS[2 * i]
  local pred, nfields = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {}
  for f = 1, nfields do fields[f] = ARGV[a + 1 + f] end
  a = a + 2 + nfields
  local t = types[stream]
  if t == nil then
    t = redis.call('TYPE', stream)['ok']
    types[stream] = t
  end
  if t ~= 'none' and t ~= 'stream' then
    results[i] = redis.error_reply('WRONGTYPE key ' .. stream .. ' holds a ' .. t .. ', not a stream')
  else
    local ok, fresh = pcall(redis.call, 'SET', dedup, '1', 'NX', 'EX', ttl)
    if not ok then
      results[i] = failed(fresh)
    elseif not fresh then
      results[i] = 0
    elseif pred > 0 and redis.call('EXISTS', KEYS[pred]) == 0 then
      redis.call('DEL', dedup)
      results[i] = redis.error_reply('TXBOXCHAIN the previous message of this key in the batch (' .. KEYS[pred] .. ') is not stored')
    else
      local stored, id
      if maxlen ~= '0' then
        stored, id = pcall(redis.call, 'XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
      else
        stored, id = pcall(redis.call, 'XADD', stream, '*', unpack(fields))
      end
      if stored then
        types[stream] = 'stream'
        results[i] = id
      else
        redis.call('DEL', dedup)
        results[i] = failed(id)
      end
    end
  end
end
return results
)lua";

// Messages per script call: enough to spread the call's cost, few enough to
// keep Redis responsive to other clients meanwhile. A call also stops at
// kChunkBytes of payload, and a larger message goes alone: a call's
// arguments count against maxmemory while it runs, so a large message must
// not make the small ones beside it fail with OOM.
constexpr size_t kChunk = 100;
constexpr size_t kChunkBytes = size_t{1} << 20;

// DEL of a key that never exists: a write command, so it is refused exactly
// when the server refuses all writes (LOADING, READONLY, MISCONF,
// MASTERDOWN, NOREPLICAS), but not under OOM (DEL frees memory).
constexpr const char* kProbeKey = "txbox:dedup:probe";

// The `headers` field: every header but the dead-letter ones, which are
// fields of their own (docs/wire-format.md).
std::string headers_json(const brokers::Headers& headers) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& [name, value] : headers)
    if (!wire::is_dead_letter_header(name)) object[name] = value;
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
    predecessors_ = std::move(predecessors);
    for (auto chunk : chunks(sent_))
      append(connection_.context.get(), chunk_command(chunk, [&](size_t i) { return predecessors_[i]; }));
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
  // `order` cut into the chunks of one script call each.
  std::vector<std::span<const size_t>> chunks(const std::vector<size_t>& order) const {
    std::vector<std::span<const size_t>> out;
    size_t from = 0, bytes = 0;
    for (size_t k = 0; k < order.size(); ++k) {
      const size_t size = messages_[order[k]].payload.size();
      if (k > from && (k - from >= kChunk || bytes + size > kChunkBytes)) {
        out.push_back(std::span(order).subspan(from, k - from));
        from = k;
        bytes = 0;
      }
      bytes += size;
    }
    if (from < order.size()) out.push_back(std::span(order).subspan(from));
    return out;
  }

  // One EVALSHA for the messages `chunk` (indexes, in order); `predecessor`
  // gives each one's predecessor in the batch, if any.
  template <typename Predecessor>
  std::vector<std::string> chunk_command(std::span<const size_t> chunk, const Predecessor& predecessor) const {
    std::vector<std::string> keys, args;
    std::vector<std::string> argv{"EVALSHA", connection_.sha, ""};
    keys.reserve(chunk.size() * 2);
    for (size_t i : chunk) {
      keys.push_back(dedup_keys_[i]);
      keys.push_back(messages_[i].destination);
    }
    args.insert(args.end(), {shared_->ttl, shared_->maxlen, std::to_string(chunk.size())});
    auto field = [&args](std::string_view name, const std::string& value) {
      args.emplace_back(name);
      args.push_back(value);
    };
    for (size_t i : chunk) {
      const auto& m = messages_[i];
      if (auto p = predecessor(i)) {
        keys.push_back(dedup_keys_[*p]);
        args.push_back(std::to_string(keys.size()));
      } else {
        args.push_back("0");
      }
      const auto dead_letter_fields = std::count_if(m.headers.begin(), m.headers.end(), [](const auto& h) {
        return wire::is_dead_letter_header(h.first);
      });
      args.push_back(std::to_string((m.key ? 8 : 6) + 2 * dead_letter_fields));
      field(wire::kMessageId, m.message_id);
      if (m.key) field(wire::kMessageKey, *m.key);
      field(wire::kPayloadField, m.payload);
      field(wire::kHeadersField, headers_json(m.headers));
      for (const auto& [name, value] : m.headers)
        if (wire::is_dead_letter_header(name)) field(name, value);
    }
    argv[2] = std::to_string(keys.size());
    argv.reserve(3 + keys.size() + args.size());
    for (auto& k : keys) argv.push_back(std::move(k));
    for (auto& a : args) argv.push_back(std::move(a));
    return argv;
  }

  // Reads one reply per chunk of `order` (sent in that order, chunks()).
  // On a lost connection or the deadline, the messages still without a
  // reply fail and the connection is dropped: nothing is sent again on
  // another one.
  void read_replies(const std::vector<size_t>& order, Clock::time_point deadline) {
    redisContext* context = connection_.context.get();
    for (auto chunk : chunks(order)) {
      const size_t from = static_cast<size_t>(chunk.data() - order.data());
      Failure failure;
      auto reply = get_reply_before(context, deadline, failure);
      if (!reply) {
        if (failure.kind == Failure::Kind::timeout)
          failure.text = fmt::format("{}, {} of {} replies unread", failure.text, order.size() - from, order.size());
        fail(std::span(order).subspan(from), failure);
        if (failure.kind == Failure::Kind::lost) shared_->drop_idle();
        connection_ = {};
        return;
      }
      if (is_error(reply.get())) {
        // The call as a whole failed (NOSCRIPT, ...): so did each message.
        for (size_t i : chunk) settle(i, reply.get());
        continue;
      }
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != chunk.size()) {
        fail(chunk, {Failure::Kind::reply, fmt::format("unexpected reply to the publish script (type {}, {} "
                                                       "elements for {} messages)",
                                                       reply->type, reply->elements, chunk.size())});
        continue;
      }
      for (size_t k = 0; k < chunk.size(); ++k) settle(chunk[k], reply->element[k]);
    }
  }

  // The outcome of message i from its reply (an element of the chunk's).
  void settle(size_t i, const redisReply* reply) {
    if (!is_error(reply)) {
      // An entry id (new entry) or 0 (a duplicate within the dedup window):
      // both mean the stream holds the message.
      results_[i] = {true, brokers::ErrorClass::transient, {}};
      outcomes_[i] = FirstRound::stored;
      return;
    }
    auto c = classify(reply_failure(reply), messages_[i].destination, shared_->endpoint.address());
    results_[i] = {false, c.error_class, std::move(c.description)};
    if (has_code(reply, "NOSCRIPT"))
      outcomes_[i] = FirstRound::noscript;
    else if (has_code(reply, kChainRefusedCode))
      outcomes_[i] = FirstRound::chain_refused;
    else if (results_[i].error_class == brokers::ErrorClass::permanent)
      outcomes_[i] = FirstRound::removed;
    else
      outcomes_[i] = FirstRound::failed;
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
    std::vector<std::optional<size_t>> predecessor(messages_.size());
    for (const auto& r : resends) predecessor[r.index] = r.predecessor;
    for (auto chunk : chunks(order)) append(context, chunk_command(chunk, [&](size_t i) { return predecessor[i]; }));
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
  std::vector<std::optional<size_t>> predecessors_;  // per message, in the first round
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
      if (c.error_class == brokers::ErrorClass::permanent)
        throw brokers::BrokerError(ErrorKind::config, c.description);
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
    throw txbox::UsageError(fmt::format("unknown Redis publisher property '{}': the Redis adapter takes its "
                                            "options from the URL (?maxlen=N&dedup_ttl=SECONDS)",
                                            properties.begin()->first));
  auto maxlen = query_number(url, "maxlen", 0, 0);
  auto ttl = query_number(url, "dedup_ttl", 86400, 1);
  return std::make_unique<RedisPublisher>(std::make_shared<Shared>(std::move(endpoint), maxlen, ttl));
}

}  // namespace txbox::redis
