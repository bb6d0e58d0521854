#include "connection.hpp"

#include <fmt/format.h>
#include <sys/time.h>

#include <cerrno>
#include <charconv>
#include <stdexcept>

namespace txbox::redis::detail {

namespace {
constexpr const char* kForm = "expected redis://[[user]:password@]host[:port][/db][?maxlen=N&dedup_ttl=SECONDS]";

[[noreturn]] void bad_url(const brokers::BrokerUrl& url, const std::string& why) {
  throw std::invalid_argument(fmt::format("invalid Redis URL '{}': {}; {}", url.original, why, kForm));
}

timeval to_timeval(std::chrono::milliseconds timeout) {
  if (timeout < std::chrono::milliseconds(1)) timeout = std::chrono::milliseconds(1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  return tv;
}

Failure io_failure(const redisContext* context) {
  Failure failure;
  std::string_view err = context->errstr;
  // A socket timeout surfaces as EAGAIN from read/write.
  if (context->err == REDIS_ERR_IO && (err.find("temporarily unavailable") != std::string_view::npos ||
                                       err.find("timed out") != std::string_view::npos)) {
    failure.kind = Failure::Kind::timeout;
    failure.text = "socket timeout";
  } else {
    failure.kind = Failure::Kind::io;
    failure.text = context->err == REDIS_ERR_EOF ? "server closed the connection" : std::string(err);
  }
  return failure;
}
}  // namespace

std::string Endpoint::address() const { return fmt::format("{}:{}", host, port); }

long long query_number(const brokers::BrokerUrl& url, const std::string& name, long long fallback, long long min) {
  auto it = url.query.find(name);
  if (it == url.query.end()) return fallback;
  long long value = 0;
  const auto& text = it->second;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || p != text.data() + text.size() || value < min)
    bad_url(url, fmt::format("option {}='{}' is not a whole number >= {}", name, text, min));
  return value;
}

Endpoint parse_endpoint(const brokers::BrokerUrl& url, std::initializer_list<std::string_view> allowed_query) {
  if (url.scheme != "redis") bad_url(url, fmt::format("the scheme is '{}', not 'redis'", url.scheme));
  if (url.hosts.size() != 1)
    bad_url(url, "exactly one host is supported (no Redis Cluster or Sentinel); give the primary's host:port");
  for (const auto& [name, value] : url.query) {
    bool known = name == "connect_timeout_ms";
    for (auto allowed : allowed_query) known = known || name == allowed;
    if (!known) bad_url(url, fmt::format("unknown option '{}'", name));
  }
  Endpoint endpoint;
  endpoint.host = url.hosts.front().host;
  endpoint.port = url.hosts.front().port ? url.hosts.front().port : 6379;
  endpoint.user = url.user;
  endpoint.password = url.password;
  if (!endpoint.user.empty() && endpoint.password.empty())
    bad_url(url, "a user name needs a password (redis://user:password@host)");
  if (!url.path.empty()) {
    int db = -1;
    auto [p, ec] = std::from_chars(url.path.data(), url.path.data() + url.path.size(), db);
    if (ec != std::errc{} || p != url.path.data() + url.path.size() || db < 0)
      bad_url(url, fmt::format("the path '/{}' is not a database number such as /0", url.path));
    endpoint.db = db;
  }
  endpoint.connect_timeout = std::chrono::milliseconds(query_number(url, "connect_timeout_ms", 5000, 1));
  return endpoint;
}

ContextPtr connect(const Endpoint& endpoint, std::chrono::milliseconds timeout, Failure& failure) {
  auto connect_timeout = std::min(endpoint.connect_timeout, std::max(timeout, std::chrono::milliseconds(100)));
  ContextPtr context(redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, to_timeval(connect_timeout)));
  if (!context) {
    failure = {Failure::Kind::io, "out of memory allocating the connection"};
    return nullptr;
  }
  if (context->err) {
    failure = io_failure(context.get());
    return nullptr;
  }
  set_timeout(context.get(), timeout);
  auto check = [&](std::vector<std::string> argv) {
    auto reply = command(context.get(), argv, failure);
    if (!reply) return false;
    if (is_error(reply.get())) {
      failure = reply_failure(reply.get());
      return false;
    }
    return true;
  };
  if (!endpoint.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!endpoint.user.empty()) auth.push_back(endpoint.user);
    auth.push_back(endpoint.password);
    if (!check(auth)) return nullptr;
  }
  if (endpoint.db != 0 && !check({"SELECT", std::to_string(endpoint.db)})) return nullptr;
  return context;
}

void set_timeout(redisContext* context, std::chrono::milliseconds timeout) {
  redisSetTimeout(context, to_timeval(timeout));
}

void append(redisContext* context, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const auto& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  redisAppendCommandArgv(context, static_cast<int>(args.size()), args.data(), lengths.data());
}

ReplyPtr get_reply(redisContext* context, Failure& failure) {
  void* raw = nullptr;
  if (redisGetReply(context, &raw) != REDIS_OK || raw == nullptr) {
    if (raw) freeReplyObject(raw);
    failure = io_failure(context);
    return nullptr;
  }
  return ReplyPtr(static_cast<redisReply*>(raw));
}

ReplyPtr command(redisContext* context, const std::vector<std::string>& argv, Failure& failure) {
  append(context, argv);
  return get_reply(context, failure);
}

std::string_view text(const redisReply* reply) {
  if (!reply || !reply->str) return {};
  return {reply->str, static_cast<size_t>(reply->len)};
}

bool is_error(const redisReply* reply) { return reply && reply->type == REDIS_REPLY_ERROR; }

Failure reply_failure(const redisReply* reply) { return {Failure::Kind::reply, std::string(text(reply))}; }

}  // namespace txbox::redis::detail
