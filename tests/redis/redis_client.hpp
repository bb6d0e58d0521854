#pragma once
// Shared by the Redis tests that need no PostgreSQL: a raw hiredis client to
// inspect (and reconfigure) a server, the adapter's publisher and consumer,
// and a private redis-server (scripts/redis.sh).

#include <hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/brokers/url.hpp"
#include "txbox/redis/redis.hpp"

namespace txbox::test::redis {

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct Entry {
  std::string id;
  std::map<std::string, std::string> fields;
};

// Direct access to the server, to look at what the adapter wrote.
class Client {
 public:
  explicit Client(const std::string& url) {
    auto parsed = brokers::parse_broker_url(url);
    context_.reset(redisConnect(parsed.hosts.at(0).host.c_str(), parsed.hosts.at(0).port));
    REQUIRE(context_);
    REQUIRE(context_->err == 0);
  }
  Reply cmd(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<size_t> lengths;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lengths.push_back(a.size());
    }
    Reply reply(static_cast<redisReply*>(
        redisCommandArgv(context_.get(), static_cast<int>(args.size()), args.data(), lengths.data())));
    REQUIRE(reply);
    return reply;
  }
  long long integer(const std::vector<std::string>& argv) {
    auto reply = cmd(argv);
    REQUIRE(reply->type == REDIS_REPLY_INTEGER);
    return reply->integer;
  }
  std::string string(const std::vector<std::string>& argv) {
    auto reply = cmd(argv);
    INFO(std::string(reply->str ? reply->str : "", reply->str ? reply->len : 0));
    REQUIRE((reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS));
    return std::string(reply->str, reply->len);
  }
  // A field of INFO, e.g. info("memory", "used_memory"); "" when absent.
  std::string info(const std::string& section, const std::string& field) {
    auto all = string({"INFO", section});
    auto at = all.find("\r\n" + field + ":");
    if (at == std::string::npos) return {};
    at += field.size() + 3;
    return all.substr(at, all.find("\r\n", at) - at);
  }
  bool exists(const std::string& key) { return integer({"EXISTS", key}) == 1; }
  long long xlen(const std::string& stream) { return integer({"XLEN", stream}); }
  long long pending(const std::string& stream, const std::string& group) {
    auto reply = cmd({"XPENDING", stream, group});
    REQUIRE(reply->type == REDIS_REPLY_ARRAY);
    return reply->element[0]->integer;
  }
  // Every entry, in id order.
  std::vector<Entry> xrange(const std::string& stream) {
    std::vector<Entry> out;
    std::string start = "-";
    for (;;) {
      auto reply = cmd({"XRANGE", stream, start, "+", "COUNT", "5000"});
      REQUIRE(reply->type == REDIS_REPLY_ARRAY);
      size_t added = 0;
      for (size_t i = 0; i < reply->elements; ++i) {
        auto* item = reply->element[i];
        Entry e{std::string(item->element[0]->str, item->element[0]->len), {}};
        if (!out.empty() && e.id == out.back().id) continue;
        auto* f = item->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
          e.fields[std::string(f->element[k]->str, f->element[k]->len)] =
              std::string(f->element[k + 1]->str, f->element[k + 1]->len);
        out.push_back(std::move(e));
        ++added;
      }
      if (added == 0) break;
      start = out.back().id;
    }
    return out;
  }

 private:
  struct Free {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
  };
  std::unique_ptr<redisContext, Free> context_;
};

inline std::unique_ptr<brokers::Publisher> publisher(const std::string& url) {
  return txbox::redis::make_publisher(brokers::parse_broker_url(url));
}

inline txbox::redis::ConsumerOptions consumer_options(const std::string& stream, const std::string& group,
                                                      const std::string& name) {
  txbox::redis::ConsumerOptions o;
  o.stream = stream;
  o.group = group;
  o.consumer_name = name;
  o.block = std::chrono::milliseconds(200);
  return o;
}

inline std::unique_ptr<brokers::Consumer> consumer(const std::string& url, const txbox::redis::ConsumerOptions& o) {
  return txbox::redis::make_consumer(brokers::parse_broker_url(url), o);
}

inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A redis-server of the test's own (scripts/redis.sh), durable (AOF, fsync
// always), on a free port; stopped by the destructor.
class PrivateRedis {
 public:
  PrivateRedis() : dir_("/tmp/" + unique_name("redis")), port_(free_port()) { start(); }
  ~PrivateRedis() { run({script(), "stop", dir_}); }
  PrivateRedis(const PrivateRedis&) = delete;
  PrivateRedis& operator=(const PrivateRedis&) = delete;
  void start() {
    auto r = run({script(), "start", dir_, std::to_string(port_)});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  void kill() { REQUIRE(run({script(), "kill", dir_}).exit_code == 0); }  // SIGKILL: a crash
  void stop() { REQUIRE(run({script(), "stop", dir_}).exit_code == 0); }  // SIGTERM: a clean stop
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

 private:
  static std::string script() { return std::string(TXBOX_SOURCE_DIR) + "/scripts/redis.sh"; }
  std::string dir_;
  int port_;
};

}  // namespace txbox::test::redis
