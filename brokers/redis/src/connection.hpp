#pragma once
// Private to the Redis adapter: owning hiredis handles, the endpoint parsed
// from the URL, connecting (AUTH, SELECT) and sending commands.

#include <hiredis.h>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/brokers/wire.hpp"

#include "errors.hpp"
#include "txbox/brokers/url.hpp"

namespace txbox::redis::detail {

struct ContextDeleter {
  void operator()(redisContext* context) const noexcept { redisFree(context); }
};
struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
// The adapter's shorthands, for both the publisher and the consumer.
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace wire = brokers::wire;

using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

struct Endpoint {
  std::string host;
  int port = 6379;
  std::string user;
  std::string password;
  int db = 0;
  std::chrono::milliseconds connect_timeout{5000};
  std::string address() const;  // host:port
};

// Validates a redis:// URL: one host, a numeric db path, and only the query
// options in `allowed_query` (plus connect_timeout_ms). Throws
// txbox::UsageError naming the problem and the expected form.
Endpoint parse_endpoint(const brokers::BrokerUrl& url, std::initializer_list<std::string_view> allowed_query);

// Parses a non-negative integer query option; throws txbox::UsageError.
long long query_number(const brokers::BrokerUrl& url, const std::string& name, long long fallback, long long min);

// Connects with the endpoint's connect timeout (capped at `timeout`), sets
// `timeout` as the socket timeout, sends AUTH and SELECT. nullptr on failure,
// with `failure` describing it: Kind::unreachable, or the server's error
// reply (WRONGPASS, ...).
ContextPtr connect(const Endpoint& endpoint, std::chrono::milliseconds timeout, Failure& failure);

void set_timeout(redisContext* context, std::chrono::milliseconds timeout);
// Queues a command (binary safe) in the context's output buffer.
void append(redisContext* context, const std::vector<std::string>& argv);
// Writes out everything queued, blocking up to the socket timeout. False on
// an I/O error or timeout (Kind::lost); the context is then unusable.
bool flush(redisContext* context, Failure& failure);
// Reads the next reply (flushing the output buffer first). nullptr on an I/O
// error (Kind::lost) or a socket timeout (Kind::timeout), with `failure`
// filled; the context is then unusable.
ReplyPtr get_reply(redisContext* context, Failure& failure);
// get_reply, waiting no longer than `deadline` (Kind::timeout after it).
ReplyPtr get_reply_before(redisContext* context, std::chrono::steady_clock::time_point deadline, Failure& failure);
// append + get_reply; error replies are returned as replies (REDIS_REPLY_ERROR).
ReplyPtr command(redisContext* context, const std::vector<std::string>& argv, Failure& failure);

std::string_view text(const redisReply* reply);
bool is_error(const redisReply* reply);
Failure reply_failure(const redisReply* reply);

}  // namespace txbox::redis::detail
