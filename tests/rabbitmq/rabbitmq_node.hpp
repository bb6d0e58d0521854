#pragma once
// Broker-only helpers of the RabbitMQ tests (no PostgreSQL, no relay):
// consumers, reading a queue back, and a private RabbitMQ node
// (scripts/rabbitmq.sh) for tests that kill, reconfigure or alarm a broker.

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::test {

inline std::unique_ptr<brokers::Consumer> rabbit_consumer(const std::string& broker_url, const std::string& queue,
                                                          uint16_t prefetch = 100) {
  rabbitmq::ConsumerOptions options;
  options.queue = queue;
  options.prefetch = prefetch;
  return rabbitmq::make_consumer(brokers::parse_broker_url(broker_url), options);
}

// Reads `queue` (acking everything) until `quiet` passes without a message
// or `timeout` expires; returns the message ids in queue order.
inline std::vector<std::string> drain_queue(const std::string& broker_url, const std::string& queue,
                                            std::chrono::milliseconds quiet = std::chrono::seconds(3),
                                            std::chrono::seconds timeout = std::chrono::seconds(120)) {
  auto consumer = rabbit_consumer(broker_url, queue, 500);
  std::vector<std::string> ids;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto last = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline && std::chrono::steady_clock::now() - last < quiet) {
    if (auto d = consumer->poll(std::chrono::milliseconds(200))) {
      ids.push_back(d->message.message_id);
      consumer->ack(*d);
      last = std::chrono::steady_clock::now();
    }
  }
  consumer->close();
  return ids;
}

// Checks the first occurrence of every id in `delivered` (duplicates
// allowed): each of `expected` is there, nothing else is, and per key the
// first occurrences are in the order of `expected` (a later message present
// before an earlier one of its key is a failure). `key_of` maps an id to
// its key.
template <typename KeyOf>
void check_first_occurrences(const std::vector<std::string>& delivered, const std::vector<std::string>& expected,
                             KeyOf key_of) {
  std::map<std::string, std::size_t> first;
  for (std::size_t p = 0; p < delivered.size(); ++p) first.emplace(delivered[p], p);
  std::set<std::string> wanted(expected.begin(), expected.end());
  for (const auto& [id, p] : first) {
    INFO("unexpected message " << id << " at position " << p);
    CHECK(wanted.contains(id));
  }
  std::map<std::string, std::pair<std::string, std::size_t>> last_of_key;  // key -> (id, position)
  std::size_t missing = 0, out_of_order = 0;
  for (const auto& id : expected) {
    auto it = first.find(id);
    if (it == first.end()) {
      if (++missing <= 5) UNSCOPED_INFO("missing: " << id);
      continue;
    }
    auto key = key_of(id);
    auto prev = last_of_key.find(key);
    if (prev != last_of_key.end() && prev->second.second > it->second) {
      if (++out_of_order <= 5) {
        UNSCOPED_INFO("key " << key << ": " << id << " first at " << it->second << ", before the earlier "
                             << prev->second.first << " first at " << prev->second.second);
      }
    }
    last_of_key[key] = {id, it->second};
  }
  CHECK(missing == 0);
  CHECK(out_of_order == 0);
}

inline bool port_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A RabbitMQ node of its own (scripts/rabbitmq.sh) in a temp directory on a
// free port; stopped by the destructor.
class PrivateRabbit {
 public:
  PrivateRabbit() {
    std::mt19937 rng(std::random_device{}());
    for (int i = 0; i < 100 && port_ == 0; ++i) {
      int p = 30000 + static_cast<int>(rng() % 15000);
      if (port_free(p) && port_free(p + 20000)) port_ = p;
    }
    REQUIRE(port_ != 0);
    dir_ = fmt::format("/tmp/txbox-rabbit-{}-{}", ::getpid(), port_);
    start();
  }
  ~PrivateRabbit() {
    run({script(), "stop", dir_}, std::chrono::seconds(90));
    // TXBOX_TEST_KEEP_RABBIT=1 keeps the node's data and logs for a post-mortem.
    if (std::getenv("TXBOX_TEST_KEEP_RABBIT") == nullptr) run({"/bin/rm", "-rf", dir_});
  }
  PrivateRabbit(const PrivateRabbit&) = delete;
  PrivateRabbit& operator=(const PrivateRabbit&) = delete;

  void start() {
    auto r = run({script(), "start", dir_, std::to_string(port_)}, std::chrono::seconds(120));
    if (r.exit_code != 0) run({script(), "stop", dir_}, std::chrono::seconds(90));  // a late start
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  void kill() {
    auto r = run({script(), "kill", dir_}, std::chrono::seconds(30));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  // SIGSTOPs the node at once (no script in between): whatever it has not
  // confirmed yet stays unconfirmed. kill() works on a frozen node.
  void freeze() {
    std::ifstream pid_file(dir_ + "/rabbit.pid");
    pid_t pid = 0;
    pid_file >> pid;
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGSTOP) == 0);
  }
  // rabbitmqctl against this node (its HOME holds the node's cookie).
  RunResult ctl(std::vector<std::string> args) const {
    std::vector<std::string> argv{"/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", node_name()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, std::chrono::seconds(60), {"HOME=" + dir_});
  }
  // Evaluates an Erlang expression on the node; fails the test if it fails.
  std::string eval(const std::string& expression) const {
    auto r = ctl({"eval", expression});
    INFO("rabbitmqctl eval " << expression << ": " << r.output);
    REQUIRE(r.exit_code == 0);
    return r.output;
  }
  // Makes the definitions declared so far (queues, exchanges, bindings)
  // survive a kill: RabbitMQ keeps them in Mnesia, and a durable queue
  // declared about a second before a SIGKILL was seen missing after the
  // restart (with every message confirmed into it). Call before kill().
  void sync_definitions() const { eval("mnesia:sync_log()."); }
  std::string url(const std::string& query = {}) const {
    return fmt::format("amqp://guest:guest@127.0.0.1:{}/{}", port_, query);
  }
  std::string node_name() const { return fmt::format("txbox-{}@localhost", port_); }

 private:
  static std::string script() { return std::string(TXBOX_SOURCE_DIR) + "/scripts/rabbitmq.sh"; }
  int port_ = 0;
  std::string dir_;
};

}  // namespace txbox::test
