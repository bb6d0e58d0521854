#pragma once
// Options of the relay, as plain structs with typed defaults. Filled from
// defaults < config file (TOML) < environment < command-line flags.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/brokers/broker.hpp"
#include "txbox/core/schema_name.hpp"

namespace txbox::relay {

struct RetryOptions {
  // Delay before attempt n+1 = min(cap, base * factor^(n-1)), with full
  // jitter in [delay/2, delay].
  std::chrono::milliseconds base{500};
  double factor = 2.0;
  std::chrono::milliseconds cap{std::chrono::minutes(5)};
  // The retry budget of a transiently failing row is a count AND a time: it
  // is dead-lettered once it has failed max_attempts times and has been
  // failing for max_retry_age. A partial broker outage that lasts (a
  // leaderless partition) then costs no dead letters for a day. Attempts
  // made while the broker is down as a whole do not count at all.
  int max_attempts = 10;
  std::chrono::seconds max_retry_age{std::chrono::hours(24)};
};

struct RelayOptions {
  std::string database_url;  // libpq URL or key=value string
  std::string broker_url;    // kafka://host:port[,host:port]
  int workers = 4;           // each with its own PostgreSQL connection
  int batch_size = 500;      // rows claimed (and published) per batch
  // Payload bytes the whole relay process holds in flight (all workers, all
  // batches); a batch stops there, a single larger row goes alone.
  int64_t max_batch_bytes = int64_t{16} << 20;
  // Batches one worker keeps in flight: it claims the next batch while the
  // broker confirms the previous one (keys in flight are left out of it).
  int batches_in_flight = 2;
  // How an idle relay learns about new rows: "notify" (LISTEN/NOTIFY,
  // within a millisecond, with polling as the fallback) or "poll".
  std::string wakeup = "notify";
  // How often the relay looks at the fleet (lane balance) and, when idle,
  // polls for due rows it was not woken for.
  std::chrono::milliseconds poll_interval{1000};
  // Publish until the outbox is empty, then stop.
  bool drain = false;
  // Longest wait for the broker's confirmations of one batch; unconfirmed
  // messages then count as transient failures and are retried.
  std::chrono::milliseconds publish_timeout{std::chrono::seconds(30)};
  // On SIGINT/SIGTERM: how long in-flight batches may take to finish.
  std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(10)};
  RetryOptions retry;
  // Also publish each dead letter to "<destination>.dlq" (with dlq-* headers);
  // the txbox.dead_letters table keeps it either way.
  bool publish_dead_letters = false;
  // While the broker is down as a whole: wait between probes, growing to this.
  std::chrono::milliseconds outage_backoff_cap{std::chrono::seconds(30)};
  // Longest wait for the broker's answer to a probe (Publisher::probe).
  std::chrono::milliseconds probe_timeout{std::chrono::seconds(5)};
  // The PostgreSQL schema of the outbox (--schema, TOML schema, env
  // TXBOX_SCHEMA): several services in one database each have their own.
  txbox::SchemaName schema;
  // Broker client properties (--broker-property NAME=VALUE, the [broker]
  // TOML table), handed to the adapter: librdkafka properties for Kafka,
  // e.g. compression.type=lz4; the other adapters reject names they do not
  // know.
  brokers::Properties broker_properties;
  // HOST:PORT of the operators' HTTP endpoint (/metrics, /healthz,
  // /readyz); empty = none (--http-listen, TOML http-listen, env
  // TXBOX_HTTP_LISTEN). Port 0: a free port, logged at start.
  std::string http_listen;
};

// Checks ranges and required fields; throws txbox::UsageError naming the
// option and the fix.
void validate(const RelayOptions& options);

// "NAME=VALUE" from `flag` (--broker-property, or a deprecated alias) into
// options.broker_properties; throws txbox::UsageError otherwise.
void add_broker_property(RelayOptions& options, std::string_view assignment, std::string_view flag);

// The deprecated --compression / TOML `compression`: Kafka's compression.type.
void set_kafka_compression(RelayOptions& options, const std::string& codec);

// Reads a TOML config file into `options` (keys as the long flags with '-'
// or '_', plus a [broker] table of client properties; [kafka] and
// `compression` are deprecated aliases). Throws txbox::ConfigError naming
// the file, line and key on error. Keys that
// are no longer used are accepted with a warning (`warnings`).
void load_config_file(const std::string& path, RelayOptions& options,
                      std::vector<std::string>* warnings = nullptr);

}  // namespace txbox::relay
