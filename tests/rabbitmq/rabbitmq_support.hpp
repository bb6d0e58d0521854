#pragma once
// Shared by the RabbitMQ tests: relay command lines with an amqp:// URL,
// consuming a queue through the inbox, and a private RabbitMQ node
// (scripts/rabbitmq.sh) for the fault tests.

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "fault/fault_support.hpp"
#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::test {

inline std::vector<std::string> amqp_relay_command(const std::string& db_url, const std::string& broker_url,
                                                   std::vector<std::string> extra = {}) {
  std::vector<std::string> args{binary_path("txbox-relay"), "--database-url", db_url, "--broker-url", broker_url,
                                "--drain", "--poll-interval", "20"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

inline std::unique_ptr<brokers::Consumer> rabbit_consumer(const std::string& broker_url, const std::string& queue,
                                                          uint16_t prefetch = 100) {
  rabbitmq::ConsumerOptions options;
  options.queue = queue;
  options.prefetch = prefetch;
  return rabbitmq::make_consumer(brokers::parse_broker_url(broker_url), options);
}

inline void insert_effect(pqxx::transaction_base& tx, const brokers::Delivery& d) {
  tx.exec0("INSERT INTO effects (message_id, message_key, payload) VALUES (" + tx.quote(d.message.message_id) + ", " +
           (d.message.key ? tx.quote(*d.message.key) : "NULL") + ", " + tx.quote(d.message.payload) + ")");
}

// Consumes `queue` through the inbox into `effects` until it holds n rows.
inline consumer::ConsumeStats consume_queue_into_effects(const std::string& db_url, const std::string& broker_url,
                                                         const std::string& queue, long long n,
                                                         std::chrono::seconds timeout = std::chrono::seconds(240)) {
  create_effects_table(db_url);
  auto rabbit = rabbit_consumer(broker_url, queue);
  consumer::InboxConsumer inbox_consumer(*rabbit, fast_commit(db_url), inbox::Inbox("verify"), insert_effect);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  inbox_consumer.run({}, [&](const consumer::ConsumeStats& s) {
    return static_cast<long long>(s.processed) >= n || std::chrono::steady_clock::now() > deadline;
  });
  while (inbox_consumer.poll_once()) {  // duplicates still queued
  }
  rabbit->close();
  return inbox_consumer.stats();
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
    run({"/bin/rm", "-rf", dir_});
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
  std::string url() const { return fmt::format("amqp://guest:guest@127.0.0.1:{}/", port_); }

 private:
  static std::string script() { return std::string(TXBOX_SOURCE_DIR) + "/scripts/rabbitmq.sh"; }
  int port_ = 0;
  std::string dir_;
};

}  // namespace txbox::test
