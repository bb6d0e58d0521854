#pragma once
// Shared by the RabbitMQ relay and fault tests: relay command lines with an
// amqp:// URL and consuming a queue through the inbox. The broker-only
// helpers (consumers, private nodes) are in rabbitmq_node.hpp.

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "fault/fault_support.hpp"
#include "rabbitmq_node.hpp"
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

}  // namespace txbox::test
