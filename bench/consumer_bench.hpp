#pragma once
// `txbox-bench consumer` (bench/consumer_bench.cpp): the consumer side per
// broker beside the broker's own consume ceiling, and its latency at a fixed
// rate.

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "bench_common.hpp"

namespace txbox::bench {

struct ConsumerArgs {
  std::string database_url;
  std::vector<std::string> broker_urls;
  std::string json_path;
  int messages = 200000, keys = 1000, repeat = 1;
  std::vector<int> workers{1, 4};  // InboxConsumerOptions::workers of the inbox runs
  // SCHEME=N[:N...]: other workers values for one broker (kafka, amqp, nats,
  // redis, in-memory).
  std::vector<std::string> workers_for;
  // SCHEME=N: other --messages for one broker.
  std::vector<std::string> messages_for;
  int latency_rate = 1000, latency_seconds = 20;
  std::vector<std::string> kafka_properties;  // NAME=VALUE for the Kafka consumers
};

// Adds the subcommand and its options to `app`.
CLI::App* add_consumer_command(CLI::App& app, ConsumerArgs& args);

// Runs it; the database's txbox.inbox and customer_totals are truncated.
int consumer_bench(const ConsumerArgs& args);

// The consumer records of a run's JSON lines as a Markdown section (what
// `txbox-bench report` writes to consumer.md) and the chart's data file
// out_dir/consumer.dat (bench/charts.gp draws consumer.png from it).
void report_consumer(const std::vector<json>& records, std::ostream& markdown, const std::string& out_dir);

}  // namespace txbox::bench
