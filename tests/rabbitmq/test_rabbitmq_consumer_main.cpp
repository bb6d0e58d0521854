// txbox-test-rabbitmq-consumer: reads a RabbitMQ queue through the inbox
// into an `effects` table (created if missing). Exits 0 once the table
// holds --expect rows, or on SIGTERM/SIGINT after finishing the message in hand.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <pqxx/pqxx>

#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace {
std::stop_source stop;
void on_signal(int) { stop.request_stop(); }
}  // namespace

int main(int argc, char** argv) {
  std::string database_url, broker_url, queue, consumer_name = "billing";
  long expect = 0;
  CLI::App app{"txbox RabbitMQ test consumer"};
  app.add_option("--database-url", database_url)->required();
  app.add_option("--broker-url", broker_url)->required();
  app.add_option("--queue", queue)->required();
  app.add_option("--consumer", consumer_name);
  app.add_option("--expect", expect);
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
    txbox::rabbitmq::ConsumerOptions options;
    options.queue = queue;
    auto consumer = txbox::rabbitmq::make_consumer(txbox::brokers::parse_broker_url(broker_url), options);
    txbox::consumer::InboxConsumer inbox_consumer(
        *consumer, database_url, txbox::inbox::Inbox(consumer_name),
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
    fmt::print(stderr, "txbox-test-rabbitmq-consumer: error: {}\n", e.what());
    return 1;
  }
}
