#pragma once
// Shared by the Redis relay and fault tests: redis_client.hpp plus the relay
// command and consuming a stream through the inbox into the effects table.

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fault/fault_support.hpp"
#include "redis_client.hpp"
#include "txbox/consumer/inbox_consumer.hpp"

namespace txbox::test::redis {

inline std::vector<std::string> relay_command(const std::string& db_url, const std::string& redis_url,
                                              std::vector<std::string> extra = {}) {
  std::vector<std::string> args{binary_path("txbox-relay"), "--database-url", db_url, "--broker-url", redis_url,
                                "--drain", "--poll-interval", "20"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

inline void insert_effect(pqxx::transaction_base& tx, const brokers::Delivery& d) {
  tx.exec0("INSERT INTO effects (message_id, message_key, payload) VALUES (" + tx.quote(d.message.message_id) + ", " +
           (d.message.key ? tx.quote(*d.message.key) : "NULL") + ", " + tx.quote(d.message.payload) + ")");
}

// Consumes `stream` through the inbox into `effects` until it holds n rows.
inline consumer::ConsumeStats consume_into_effects(const std::string& db_url, const std::string& redis_url,
                                                   const std::string& stream, long long n,
                                                   std::chrono::seconds timeout = std::chrono::seconds(240)) {
  create_effects_table(db_url);
  auto c = consumer(redis_url, consumer_options(stream, unique_name("verify"), "verifier"));
  consumer::InboxConsumer inbox_consumer(*c, fast_commit(db_url), inbox::Inbox("verify"), insert_effect);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  inbox_consumer.run({}, [&](const consumer::ConsumeStats& s) {
    return static_cast<long long>(s.processed) >= n || std::chrono::steady_clock::now() > deadline;
  });
  c->close();
  return inbox_consumer.stats();
}

}  // namespace txbox::test::redis
