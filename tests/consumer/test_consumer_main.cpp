// txbox-test-consumer: reads a topic through the inbox into an `effects`
// table (created if missing). Exits 0 once the table holds --expect rows, or
// on SIGTERM/SIGINT after finishing the message in hand.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <pqxx/pqxx>

#include "support/effects_consumer.hpp"
#include "txbox/kafka/kafka.hpp"

namespace {
std::stop_source stop;
void on_signal(int) { stop.request_stop(); }
}  // namespace

int main(int argc, char** argv) {
  std::string database_url, bootstrap, topic, group;
  long expect = 0;
  CLI::App app{"txbox test consumer"};
  app.add_option("--database-url", database_url)->required();
  app.add_option("--bootstrap-servers", bootstrap)->required();
  app.add_option("--topic", topic)->required();
  app.add_option("--group", group)->required();
  app.add_option("--expect", expect);
  CLI11_PARSE(app, argc, argv);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  return txbox::test::run_effects_consumer(
      "txbox-test-consumer", stop.get_token(), database_url, group, expect, [&] {
        txbox::kafka::ConsumerOptions options;
        options.bootstrap_servers = bootstrap;
        options.group_id = group;
        options.topics = {topic};
        options.session_timeout = std::chrono::milliseconds(6000);
        options.properties["heartbeat.interval.ms"] = "1000";
        return txbox::kafka::make_consumer(options);
      });
}
