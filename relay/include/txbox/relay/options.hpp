#pragma once
// Options of the relay, as plain structs with typed defaults. Filled from
// defaults < config file (TOML) < environment < command-line flags.

#include <chrono>
#include <optional>
#include <string>

#include "txbox/brokers/broker.hpp"

namespace txbox::relay {

struct RetryOptions {
  // Delay before attempt n+1 = min(cap, base * factor^(n-1)), with full
  // jitter in [delay/2, delay].
  std::chrono::milliseconds base{500};
  double factor = 2.0;
  std::chrono::milliseconds cap{std::chrono::minutes(5)};
  // Publish attempts before a transiently failing row is dead-lettered.
  // Attempts made while the broker is down as a whole do not count.
  int max_attempts = 10;
};

struct RelayOptions {
  std::string database_url;  // libpq URL or key=value string
  std::string broker_url;    // kafka://host:port[,host:port]
  int workers = 4;           // each with its own PostgreSQL connection
  int batch_size = 500;      // rows claimed (and published) per batch
  // Sleep of a worker that found nothing to do.
  std::chrono::milliseconds poll_interval{100};
  // Publish until the outbox is empty, then stop.
  bool drain = false;
  // Longest wait for the broker's confirmations of one batch; unconfirmed
  // messages then count as transient failures and are retried.
  std::chrono::milliseconds publish_timeout{std::chrono::seconds(30)};
  // On SIGINT/SIGTERM: how long in-flight batches may take to finish.
  std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(10)};
  // Batches a worker drains from one lane before moving on (fairness).
  int batches_per_lane = 8;
  RetryOptions retry;
  // Also publish each dead letter to "<destination>.dlq" (with dlq-* headers);
  // the txbox.dead_letters table keeps it either way.
  bool publish_dead_letters = false;
  // While the broker is down as a whole: wait between probes, growing to this.
  std::chrono::milliseconds outage_backoff_cap{std::chrono::seconds(30)};
  // Broker client settings.
  std::string compression = "none";
  brokers::Properties broker_properties;  // passed through (librdkafka properties for Kafka)
};

// Checks ranges and required fields; throws std::invalid_argument naming the
// option and the fix.
void validate(const RelayOptions& options);

// Reads a TOML config file into `options` (keys as the long flags with '-'
// or '_', plus a [kafka] table of librdkafka properties). Throws
// std::invalid_argument naming the file, line and key on error.
void load_config_file(const std::string& path, RelayOptions& options);

}  // namespace txbox::relay
