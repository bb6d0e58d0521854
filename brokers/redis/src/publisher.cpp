// Redis Streams publisher: each batch is one pipeline of EVALSHA calls of the
// dedup-and-XADD script on a pooled connection; every reply is checked.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "connection.hpp"
#include "errors.hpp"
#include "txbox/redis/redis.hpp"

namespace txbox::redis {

namespace {
using namespace detail;
using Clock = std::chrono::steady_clock;

// KEYS[1] = dedup key, KEYS[2] = stream; ARGV[1] = ttl seconds, ARGV[2] =
// MAXLEN (0 = none), ARGV[3..] = field, value, ... Returns the new entry id,
// or 0 when the message id was already published within the ttl. The type
// check comes first and a failed XADD removes the dedup key again, so a
// rejected message is never remembered as published.
constexpr const char* kScript = R"lua(
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[2] .. ' holds a ' .. t .. ', not a stream')
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local ok, id
if ARGV[2] ~= '0' then
  ok, id = pcall(redis.call, 'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  ok, id = pcall(redis.call, 'XADD', KEYS[2], '*', unpack(ARGV, 3))
end
if not ok then redis.call('DEL', KEYS[1]) end
return id
)lua";

std::string headers_json(const brokers::Headers& headers) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& [name, value] : headers) object[name] = value;
  return object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// A pooled connection and the SHA1 of the script it loaded.
struct Connection {
  ContextPtr context;
  std::string sha;
  explicit operator bool() const { return context != nullptr; }
};

class RedisPublisher final : public brokers::Publisher {
 public:
  RedisPublisher(Endpoint endpoint, long long maxlen, long long ttl)
      : endpoint_(std::move(endpoint)), maxlen_(std::to_string(maxlen)), ttl_(std::to_string(ttl)) {
    // Fail fast on wrong credentials; an unreachable server is fine (the
    // relay starts anyway and connects once it is up).
    Failure failure;
    auto connection = open(endpoint_.connect_timeout, failure);
    if (connection) {
      idle_.push_back(std::move(connection));
    } else {
      auto c = classify(failure, "", endpoint_.address());
      if (c.error_class == brokers::ErrorClass::permanent) throw brokers::BrokerError(c.description, false);
      set_health(false, c.description);
    }
  }

  std::vector<brokers::PublishResult> publish(std::span<const brokers::Message> messages,
                                              std::chrono::milliseconds timeout) override {
    const size_t n = messages.size();
    std::vector<brokers::PublishResult> results(n);
    if (n == 0) return results;
    const auto deadline = Clock::now() + timeout;
    Failure failure;
    auto connection = acquire(timeout, failure);
    if (!connection) {
      auto c = classify(failure, messages.front().destination, endpoint_.address());
      for (auto& r : results) r = {false, c.error_class, c.description};
      set_health(!c.server_unavailable, c.description);
      return results;
    }

    redisContext* context = connection.context.get();
    std::vector<size_t> pending(n);
    for (size_t i = 0; i < n; ++i) pending[i] = i;
    bool any_confirmed = false, unavailable = false, connection_lost = false;
    std::string unavailable_reason;
    // Second round only for NOSCRIPT (the script cache was flushed).
    for (int round = 0; round < 2 && !pending.empty() && !connection_lost; ++round) {
      if (round == 1) {
        auto reply = command(context, {"SCRIPT", "LOAD", kScript}, failure);
        if (reply && !is_error(reply.get())) connection.sha = std::string(text(reply.get()));
        if (!reply || is_error(reply.get())) {
          if (reply) failure = reply_failure(reply.get());
          connection_lost = !reply;
          auto c = classify(failure, messages.front().destination, endpoint_.address());
          for (size_t i : pending) results[i] = {false, c.error_class, c.description};
          break;
        }
      }
      for (size_t i : pending) append(context, command_for(messages[i], connection.sha));
      std::vector<size_t> noscript;
      for (size_t p = 0; p < pending.size(); ++p) {
        const size_t i = pending[p];
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        ReplyPtr reply;
        if (left.count() > 0) {
          if (p % 64 == 0) set_timeout(context, left);
          reply = get_reply(context, failure);
        } else {
          failure = {Failure::Kind::timeout, fmt::format("publish timeout of {} ms reached", timeout.count())};
        }
        if (!reply) {
          // The replies still due are lost with the connection; whatever the
          // server did apply is deduplicated when the relay retries.
          connection_lost = true;
          auto c = classify(failure, messages[i].destination, endpoint_.address());
          for (size_t q = p; q < pending.size(); ++q)
            results[pending[q]] = {false, c.error_class, c.description};
          unavailable = true;
          unavailable_reason = c.description;
          break;
        }
        if (is_error(reply.get())) {
          auto f = reply_failure(reply.get());
          if (text(reply.get()).starts_with("NOSCRIPT")) {
            noscript.push_back(i);
            continue;
          }
          auto c = classify(f, messages[i].destination, endpoint_.address());
          results[i] = {false, c.error_class, c.description};
          if (c.server_unavailable) {
            unavailable = true;
            unavailable_reason = c.description;
          }
          continue;
        }
        // An entry id (new entry) or 0 (a duplicate within the dedup window):
        // both mean the stream holds the message.
        results[i] = {true, brokers::ErrorClass::transient, {}};
        any_confirmed = true;
      }
      pending = std::move(noscript);
    }
    if (connection_lost) {
      // The server went away or restarted: the idle connections are dead too.
      std::lock_guard lock(mutex_);
      idle_.clear();
    } else {
      release(std::move(connection));
    }
    if (connection_lost || (unavailable && !any_confirmed))
      set_health(false, unavailable_reason);
    else if (any_confirmed)
      set_health(true, {});
    return results;
  }

  bool healthy() const override { return healthy_.load(); }

 private:
  std::vector<std::string> command_for(const brokers::Message& m, const std::string& sha) const {
    std::vector<std::string> argv;
    argv.reserve(14);
    if (m.message_id.empty()) {  // nothing to deduplicate on
      argv = {"XADD", m.destination};
      if (maxlen_ != "0") argv.insert(argv.end(), {"MAXLEN", "~", maxlen_});
      argv.push_back("*");
    } else {
      argv = {"EVALSHA", sha, "2", "txbox:dedup:" + m.destination + ":" + m.message_id, m.destination, ttl_, maxlen_};
    }
    argv.insert(argv.end(), {"message-id", m.message_id});
    if (m.key) argv.insert(argv.end(), {"key", *m.key});
    argv.insert(argv.end(), {"payload", m.payload, "headers", headers_json(m.headers)});
    return argv;
  }

  // A new connection with the script loaded.
  Connection open(std::chrono::milliseconds timeout, Failure& failure) {
    auto context = connect(endpoint_, timeout, failure);
    if (!context) return {};
    auto reply = command(context.get(), {"SCRIPT", "LOAD", kScript}, failure);
    if (!reply) return {};
    if (is_error(reply.get()) || reply->type != REDIS_REPLY_STRING) {
      failure = reply_failure(reply.get());
      return {};
    }
    return {std::move(context), std::string(text(reply.get()))};
  }

  Connection acquire(std::chrono::milliseconds timeout, Failure& failure) {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        auto connection = std::move(idle_.back());
        idle_.pop_back();
        return connection;
      }
      if (Clock::now() < next_connect_) {  // reconnect backoff
        failure = last_connect_failure_;
        return {};
      }
    }
    auto connection = open(timeout, failure);
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

  void release(Connection connection) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(connection));
  }

  void set_health(bool healthy, const std::string& reason) {
    if (healthy_.exchange(healthy) == healthy) return;
    if (healthy)
      spdlog::info("Redis publisher: {} reachable again, writes confirmed", endpoint_.address());
    else
      spdlog::warn("Redis publisher: {} unavailable: {}", endpoint_.address(), reason);
  }

  static constexpr std::chrono::milliseconds kFirstDelay{200};
  static constexpr std::chrono::milliseconds kMaxDelay{5000};

  const Endpoint endpoint_;
  const std::string maxlen_, ttl_;
  std::mutex mutex_;
  std::vector<Connection> idle_;
  Clock::time_point next_connect_{};
  std::chrono::milliseconds connect_delay_{kFirstDelay};
  Failure last_connect_failure_;
  std::atomic<bool> healthy_{true};
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
  return std::make_unique<RedisPublisher>(std::move(endpoint), maxlen, ttl);
}

}  // namespace txbox::redis
