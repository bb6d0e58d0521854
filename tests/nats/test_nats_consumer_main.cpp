// txbox-test-nats-consumer: reads a NATS subject (durable pull consumer)
// through the inbox into an `effects` table (created if missing). Exits 0
// once the table holds --expect rows, or on SIGTERM/SIGINT after finishing
// the message in hand.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <pqxx/pqxx>

#include "txbox/brokers/url.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/nats/nats.hpp"

namespace {
std::stop_source stop;
void on_signal(int) { stop.request_stop(); }
}  // namespace

int main(int argc, char** argv) {
  std::string database_url, nats_url, subject, durable;
  long expect = 0;
  int ack_wait_ms = 2000;
  CLI::App app{"txbox NATS test consumer"};
  app.add_option("--database-url", database_url)->required();
  app.add_option("--nats-url", nats_url)->required();
  app.add_option("--subject", subject)->required();
  app.add_option("--durable", durable)->required();
  app.add_option("--expect", expect);
  app.add_option("--ack-wait-ms", ack_wait_ms);
  CLI11_PARSE(app, argc, argv);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  try {
    pqxx::connection conn(database_url);
    {
      pqxx::work tx(conn);
      tx.exec0(
          "CREATE TABLE IF NOT EXISTS effects (seq bigserial PRIMARY KEY, message_id text NOT NULL, "
          "message_key text, payload text NOT NULL)");
      tx.commit();
    }
    txbox::nats::ConsumerOptions options;
    options.subject = subject;
    options.durable = durable;
    options.batch = 50;
    options.ack_wait = std::chrono::milliseconds(ack_wait_ms);
    auto consumer = txbox::nats::make_consumer(txbox::brokers::parse_broker_url(nats_url), options);
    txbox::consumer::InboxConsumer inbox_consumer(
        *consumer, database_url, txbox::inbox::Inbox(durable),
        [](pqxx::transaction_base& tx, const txbox::brokers::Delivery& d) {
          tx.exec0(fmt::format("INSERT INTO effects (message_id, message_key, payload) VALUES ({}, {}, {})",
                               tx.quote(d.message.message_id),
                               d.message.key ? tx.quote(*d.message.key) : "NULL", tx.quote(d.message.payload)));
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
    fmt::print(stderr, "txbox-test-nats-consumer: error: {}\n", e.what());
    return 1;
  }
}
