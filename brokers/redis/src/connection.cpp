#include "connection.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <sds.h>
#include <sys/time.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <ctime>
#include <stdexcept>
#include "txbox/core/error.hpp"

namespace txbox::redis::detail {

namespace {
constexpr const char* kForm = "expected redis://[[user]:password@]host[:port][/db][?maxlen=N&dedup_ttl=SECONDS]";

[[noreturn]] void bad_url(const brokers::BrokerUrl& url, const std::string& why) {
  throw txbox::UsageError(fmt::format("invalid Redis URL '{}': {}; {}", url.redacted, why, kForm));
}

timeval to_timeval(std::chrono::milliseconds timeout) {
  if (timeout < std::chrono::milliseconds(1)) timeout = std::chrono::milliseconds(1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  return tv;
}

// hiredis writes with write(2). On a connection the server has closed (a
// restart while it sat in the pool), the first write draws a reset and the
// next one raises SIGPIPE, whose default action ends the process. Blocks
// SIGPIPE on this thread (it is sent to the writing thread) while a write
// runs and discards one it raised; the write itself then fails with EPIPE.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;  // someone else's: leave it alone
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
  }
  ~SigpipeBlocked() {
    if (!was_pending_) {
      timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t previous_{};
  bool was_pending_ = false;
};

Failure io_failure(const redisContext* context) {
  Failure failure;
  std::string_view err = context->errstr;
  // A socket timeout surfaces as EAGAIN from read/write.
  if (context->err == REDIS_ERR_IO && (err.find("temporarily unavailable") != std::string_view::npos ||
                                       err.find("timed out") != std::string_view::npos)) {
    failure.kind = Failure::Kind::timeout;
    failure.text = "socket timeout";
  } else {
    failure.kind = Failure::Kind::lost;
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
  // Until the handshake is done nothing of the caller's was sent: any
  // failure up to then means the server cannot be reached.
  auto unreachable = [&failure] {
    if (failure.kind != Failure::Kind::reply) failure.kind = Failure::Kind::unreachable;
  };
  auto connect_timeout = std::min(endpoint.connect_timeout, timeout);
  ContextPtr context(redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, to_timeval(connect_timeout)));
  if (!context) {
    failure = {Failure::Kind::unreachable, "out of memory allocating the connection"};
    return nullptr;
  }
  if (context->err) {
    failure = io_failure(context.get());
    unreachable();
    return nullptr;
  }
  set_timeout(context.get(), timeout);
  auto check = [&](std::vector<std::string> argv) {
    auto reply = command(context.get(), argv, failure);
    if (!reply) {
      unreachable();
      return false;
    }
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

bool flush(redisContext* context, Failure& failure) {
  if (sdslen(context->obuf) == 0) return true;
  SigpipeBlocked no_sigpipe;
  int done = 0;
  while (!done) {
    if (redisBufferWrite(context, &done) != REDIS_OK) {
      failure = io_failure(context);
      failure.kind = Failure::Kind::lost;  // a write that cannot go out is a dead connection
      return false;
    }
  }
  return true;
}

ReplyPtr get_reply(redisContext* context, Failure& failure) {
  if (!flush(context, failure)) return nullptr;  // redisGetReply would write unguarded
  void* raw = nullptr;
  if (redisGetReply(context, &raw) != REDIS_OK || raw == nullptr) {
    if (raw) freeReplyObject(raw);
    failure = io_failure(context);
    return nullptr;
  }
  return ReplyPtr(static_cast<redisReply*>(raw));
}

ReplyPtr get_reply_before(redisContext* context, std::chrono::steady_clock::time_point deadline, Failure& failure) {
  // Most replies of a pipeline arrive together: take the ones already read
  // without touching the socket (no timeout to set, no system call).
  void* raw = nullptr;
  if (redisGetReplyFromReader(context, &raw) != REDIS_OK) {
    failure = io_failure(context);
    return nullptr;
  }
  if (raw) return ReplyPtr(static_cast<redisReply*>(raw));
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    failure = {Failure::Kind::timeout, "the deadline passed"};
    return nullptr;
  }
  set_timeout(context, left);
  return get_reply(context, failure);
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
