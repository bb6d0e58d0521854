// txbox-test-redis-consumer: reads a Redis stream through the inbox into an
// `effects` table (created if missing). Exits 0 once the table holds
// --expect rows, or on SIGTERM/SIGINT after finishing the message in hand.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <pqxx/pqxx>

#include "txbox/brokers/url.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/redis/redis.hpp"

namespace {
std::stop_source stop;
void on_signal(int) { stop.request_stop(); }
}  // namespace

int main(int argc, char** argv) {
  std::string database_url, redis_url;
  txbox::redis::ConsumerOptions options;
  long expect = 0;
  long claim_idle_ms = 30000;
  CLI::App app{"txbox test consumer for Redis Streams"};
  app.add_option("--database-url", database_url)->required();
  app.add_option("--redis-url", redis_url)->required();
  app.add_option("--stream", options.stream)->required();
  app.add_option("--group", options.group)->required();
  app.add_option("--name", options.consumer_name)->required();
  app.add_option("--claim-idle-ms", claim_idle_ms);
  app.add_option("--expect", expect);
  CLI11_PARSE(app, argc, argv);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  try {
    options.claim_idle = std::chrono::milliseconds(claim_idle_ms);
    options.block = std::chrono::milliseconds(200);
    pqxx::connection conn(database_url);
    {
      pqxx::work tx(conn);
      tx.exec0(
          "CREATE TABLE IF NOT EXISTS effects (seq bigserial PRIMARY KEY, message_id text NOT NULL, "
          "message_key text, payload text NOT NULL)");
      tx.commit();
    }
    auto consumer = txbox::redis::make_consumer(txbox::brokers::parse_broker_url(redis_url), options);
    txbox::consumer::InboxConsumer inbox_consumer(
        *consumer, database_url, txbox::inbox::Inbox(options.group),
        [](pqxx::transaction_base& tx, const txbox::brokers::Delivery& d) {
          tx.exec0(fmt::format("INSERT INTO effects (message_id, message_key, payload) VALUES ({}, {}, {})",
                               tx.quote(d.message.message_id), d.message.key ? tx.quote(*d.message.key) : "NULL",
                               tx.quote(d.message.payload)));
        });
    int polls = 0;
    inbox_consumer.run(stop.get_token(), [&](const txbox::consumer::ConsumeStats&) {
      if (expect <= 0 || ++polls % 50 != 0) return false;
      pqxx::nontransaction tx(conn);
      return tx.exec1("SELECT count(*) FROM effects")[0].as<long>() >= expect;
    });
    consumer->close();
    auto stats = inbox_consumer.stats();
    fmt::print("processed {} duplicates {} failures {}\n", stats.processed, stats.duplicates, stats.failures);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "txbox-test-redis-consumer: error: {}\n", e.what());
    return 1;
  }
}
