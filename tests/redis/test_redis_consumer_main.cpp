// txbox-test-redis-consumer: reads a Redis stream through the inbox into an
// `effects` table (created if missing). Exits 0 once the table holds
// --expect rows, or on SIGTERM/SIGINT after finishing the message in hand.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <pqxx/pqxx>

#include "txbox/brokers/url.hpp"
#include "support/effects_consumer.hpp"
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
  return txbox::test::run_effects_consumer(
      "txbox-test-redis-consumer", stop.get_token(), database_url, options.group, expect, [&] {
        options.claim_idle = std::chrono::milliseconds(claim_idle_ms);
        options.block = std::chrono::milliseconds(200);
        return txbox::redis::make_consumer(txbox::brokers::parse_broker_url(redis_url), options);
      });
}
