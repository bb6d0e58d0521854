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
#include "support/effects_consumer.hpp"
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
  return txbox::test::run_effects_consumer(
      "txbox-test-nats-consumer", stop.get_token(), database_url, durable, expect, [&] {
        txbox::nats::ConsumerOptions options;
        options.subject = subject;
        options.durable = durable;
        options.batch = 50;
        options.ack_wait = std::chrono::milliseconds(ack_wait_ms);
        return txbox::nats::make_consumer(txbox::brokers::parse_broker_url(nats_url), options);
      });
}
