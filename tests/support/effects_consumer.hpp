#pragma once
// The shared body of the test consumer programs (one per broker, each only
// creating its broker's consumer): read through the inbox into an `effects`
// table until it holds `expect` rows or a stop is requested.

#include <fmt/format.h>

#include <functional>
#include <memory>
#include <pqxx/pqxx>
#include <stop_token>
#include <string>

#include "txbox/consumer/inbox_consumer.hpp"

namespace txbox::test {

inline void create_effects_table(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  tx.exec0(
      "CREATE TABLE IF NOT EXISTS effects (seq bigserial PRIMARY KEY, message_id text NOT NULL, "
      "message_key text, payload text NOT NULL)");
  tx.commit();
}

// The inbox handler of every test consumer: one effects row per message.
inline void record_effect(pqxx::transaction_base& tx, const brokers::Delivery& d) {
  tx.exec0(fmt::format("INSERT INTO effects (message_id, message_key, payload) VALUES ({}, {}, {})",
                       tx.quote(d.message.message_id), d.message.key ? tx.quote(*d.message.key) : "NULL",
                       tx.quote(d.message.payload)));
}

// Returns the process exit code: 0 when done or stopped, 1 on an error
// (printed as "<program>: error: ...").
inline int run_effects_consumer(const std::string& program, std::stop_token stop, const std::string& database_url,
                                const std::string& inbox_name, long expect,
                                const consumer::InboxConsumerOptions& options,
                                const std::function<std::unique_ptr<brokers::Consumer>()>& make_consumer) {
  try {
    create_effects_table(database_url);
    pqxx::connection conn(database_url);
    auto consumer = make_consumer();
    consumer::InboxConsumer inbox_consumer(*consumer, database_url, inbox::Inbox(inbox_name), record_effect,
                                             options);
    int polls = 0;
    inbox_consumer.run(stop, [&](const consumer::ConsumeStats&) {
      if (expect <= 0 || ++polls % 50 != 0) return false;
      pqxx::nontransaction tx(conn);
      return tx.exec1("SELECT count(*) FROM effects")[0].as<long>() >= expect;
    });
    consumer->close();
    auto stats = inbox_consumer.stats();
    fmt::print("processed {} duplicates {} failures {}\n", stats.processed, stats.duplicates, stats.failures);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
    return 1;
  }
}

}  // namespace txbox::test
