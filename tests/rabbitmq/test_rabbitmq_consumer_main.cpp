// txbox-test-rabbitmq-consumer: reads a RabbitMQ queue through the inbox
// into an `effects` table (created if missing). Exits 0 once the table
// holds --expect rows, or on SIGTERM/SIGINT after finishing the message in hand.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <pqxx/pqxx>

#include "support/effects_consumer.hpp"
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
  return txbox::test::run_effects_consumer(
      "txbox-test-rabbitmq-consumer", stop.get_token(), database_url, consumer_name, expect, [&] {
        txbox::rabbitmq::ConsumerOptions options;
        options.queue = queue;
        return txbox::rabbitmq::make_consumer(txbox::brokers::parse_broker_url(broker_url), options);
      });
}
