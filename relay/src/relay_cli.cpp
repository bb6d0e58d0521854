#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <pthread.h>
#include <thread>

#include "cli_common.hpp"
#include "txbox/core/error.hpp"
#include "txbox/core/version.hpp"
#include "txbox/outbox/dead_letters.hpp"
#include "txbox/registry/registry.hpp"
#include "txbox/relay/cli.hpp"
#include "txbox/relay/relay.hpp"

namespace txbox::relay {
namespace {

// Finds --config FILE / --config=FILE before the full parse, so flags given on
// the command line override the file.
std::string config_path(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--config" && i + 1 < argc) return argv[i + 1];
    if (arg.starts_with("--config=")) return std::string(arg.substr(9));
  }
  return {};
}

// SIGINT/SIGTERM handling on a thread of its own (the signals are blocked in
// every other thread): the first signal stops claiming and gives in-flight
// batches `shutdown_timeout` to finish; a second signal exits at once. Either
// way rows that were not confirmed stay in the outbox.
class SignalWatcher {
 public:
  SignalWatcher(std::stop_source& stop, std::chrono::milliseconds shutdown_timeout)
      : stop_(stop), shutdown_timeout_(shutdown_timeout) {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] { watch(); });
  }
  ~SignalWatcher() {
    done_ = true;
    thread_.join();
  }

 private:
  void watch() {
    timespec tick{0, 100'000'000};
    std::chrono::steady_clock::time_point deadline{};
    bool stopping = false;
    while (!done_) {
      int sig = sigtimedwait(&signals_, nullptr, &tick);
      if (sig > 0 && !stopping) {
        stopping = true;
        deadline = std::chrono::steady_clock::now() + shutdown_timeout_;
        spdlog::info("{} received: finishing in-flight batches (up to {} ms), then exiting",
                     sig == SIGINT ? "SIGINT" : "SIGTERM", shutdown_timeout_.count());
        stop_.request_stop();
      } else if (sig > 0) {
        std::fprintf(stderr, "txbox-relay: second signal: exiting now; unconfirmed rows stay "
                             "in the outbox\n");
        std::_Exit(130);
      } else if (stopping && std::chrono::steady_clock::now() > deadline) {
        spdlog::warn("shutdown timeout of {} ms passed with batches in flight: exiting; their "
                     "rows stay in the outbox and are published again later",
                     shutdown_timeout_.count());
        spdlog::default_logger()->flush();
        std::_Exit(0);
      }
    }
  }

  std::stop_source& stop_;
  std::chrono::milliseconds shutdown_timeout_;
  sigset_t signals_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

int relay_main(int argc, char** argv) {
  RelayOptions options;
  std::string log_level = "info";
  std::vector<std::string> broker_properties, kafka_properties;
  std::string compression, schema(txbox::SchemaName::kDefault);
  std::string config;
  std::vector<std::string> config_warnings;
  int64_t poll_ms = options.poll_interval.count(), publish_ms = options.publish_timeout.count(),
          shutdown_ms = options.shutdown_timeout.count();
  int64_t retry_base_ms = options.retry.base.count(), retry_cap_ms = options.retry.cap.count();

  CLI::App app{
      "txbox-relay: delivers committed rows of the txbox.outbox table to a message broker.\n"
      "Each row is published, confirmed by the broker, then deleted; per-key order is kept."};
  app.set_version_flag("--version", std::string("txbox-relay ") + txbox::kVersion);
  app.add_option("--config", config,
                 "TOML file with any of the long options below (without --) and a [broker] table "
                 "of broker client properties; command-line flags override it");
  app.add_option("--database-url", options.database_url,
                 "PostgreSQL connection URL, e.g. postgresql://relay@127.0.0.1:5432/app")
      ->envname("TXBOX_DATABASE_URL");
  app.add_option("--broker-url", options.broker_url,
                 "broker URL: " + fmt::format("{}", fmt::join(brokers::supported_broker_urls(), ", ")))
      ->envname("TXBOX_BROKER_URL");
  app.add_option("--schema", schema,
                 "PostgreSQL schema of the outbox tables, one per service in a shared database "
                 "(default txbox)")
      ->envname("TXBOX_SCHEMA");
  app.add_option("--workers", options.workers,
                 "worker threads, each with its own PostgreSQL connection (default 4)");
  app.add_option("--batch-size", options.batch_size, "rows claimed and published per batch (default 500)");
  app.add_option("--max-batch-bytes", options.max_batch_bytes,
                 "payload bytes the relay holds in flight at once, all workers together; a batch stops "
                 "there and a single larger row is published alone (default 16777216 = 16 MiB)");
  app.add_option("--batches-in-flight", options.batches_in_flight,
                 "batches one worker keeps in flight: it claims the next while the broker confirms the "
                 "previous one (default 2)");
  app.add_option("--wakeup", options.wakeup,
                 "how an idle relay learns of new rows: notify (LISTEN/NOTIFY within a millisecond, polling "
                 "as the fallback) or poll (default notify)")
      ->check(CLI::IsMember({"notify", "poll"}));
  app.add_option("--poll-interval", poll_ms,
                 "ms between the relay's looks at lane balance and, when idle, at due rows it was not woken "
                 "for (default 1000)");
  app.add_flag("--drain", options.drain, "publish until the outbox is empty, then exit 0");
  app.add_option("--publish-timeout", publish_ms,
                 "ms to wait for the broker to confirm a batch; unconfirmed messages are retried (default 30000)");
  app.add_option("--shutdown-timeout", shutdown_ms,
                 "ms in-flight batches get to finish after SIGINT/SIGTERM (default 10000)");
  app.add_option("--retry-base", retry_base_ms, "first retry delay in ms (default 500)");
  app.add_option("--retry-factor", options.retry.factor, "retry delay growth factor (default 2)");
  app.add_option("--retry-cap", retry_cap_ms, "longest retry delay in ms (default 300000)");
  app.add_option("--max-attempts", options.retry.max_attempts,
                 "failed publish attempts before a message may be dead-lettered (default 10; attempts "
                 "while the whole broker is down do not count)");
  std::string max_retry_age = "24h";
  app.add_option("--max-retry-age", max_retry_age,
                 "and how long it must have been failing: a message is dead-lettered after --max-attempts "
                 "failures AND this long, e.g. 24h, 30m, 0s (default 24h)");
  int64_t probe_ms = options.probe_timeout.count();
  app.add_option("--probe-timeout", probe_ms,
                 "ms to wait for the broker's answer when probing whether it is down (default 5000)");
  int64_t outage_cap_ms = options.outage_backoff_cap.count();
  app.add_option("--outage-backoff-cap", outage_cap_ms,
                 "longest wait in ms between probes while the broker is down (default 30000)");
  app.add_flag("--publish-dead-letters", options.publish_dead_letters,
               "also publish dead letters to <destination>.dlq with dlq-* headers");
  app.add_option("--broker-property", broker_properties,
                 "broker client property NAME=VALUE (repeatable): librdkafka properties for Kafka, e.g. "
                 "linger.ms=10 or compression.type=lz4");
  app.add_option("--kafka-property", kafka_properties, "deprecated: use --broker-property");
  app.add_option("--compression", compression, "deprecated: use --broker-property compression.type=CODEC");
  app.add_option("--http-listen", options.http_listen,
                 "HOST:PORT to serve /metrics (Prometheus), /healthz and /readyz on, e.g. 127.0.0.1:9464 "
                 "(default: none)")
      ->envname("TXBOX_HTTP_LISTEN");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  // The config file sets the starting values; the parse below overrides them.
  if (auto path = config_path(argc, argv); !path.empty()) {
    int code = cli::guarded("txbox-relay", "", [&] {
      load_config_file(path, options, &config_warnings);
      return 0;
    });
    if (code) return code;
    poll_ms = options.poll_interval.count();
    publish_ms = options.publish_timeout.count();
    shutdown_ms = options.shutdown_timeout.count();
    retry_base_ms = options.retry.base.count();
    retry_cap_ms = options.retry.cap.count();
    outage_cap_ms = options.outage_backoff_cap.count();
    probe_ms = options.probe_timeout.count();
    max_retry_age = fmt::format("{}s", options.retry.max_retry_age.count());
    schema = options.schema.name();
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "txbox-relay: error: %s; see txbox-relay --help\n", one_line(e.what()).c_str());
    return cli::kExitUsage;
  }
  options.poll_interval = std::chrono::milliseconds(poll_ms);
  options.publish_timeout = std::chrono::milliseconds(publish_ms);
  options.shutdown_timeout = std::chrono::milliseconds(shutdown_ms);
  options.retry.base = std::chrono::milliseconds(retry_base_ms);
  options.retry.cap = std::chrono::milliseconds(retry_cap_ms);
  options.outage_backoff_cap = std::chrono::milliseconds(outage_cap_ms);
  options.probe_timeout = std::chrono::milliseconds(probe_ms);

  cli::setup_logging("txbox-relay", log_level);
  for (const auto& warning : config_warnings) spdlog::warn("{}", warning);
  return cli::guarded("txbox-relay", options.database_url, [&] {
    try {
      options.retry.max_retry_age = outbox::parse_duration(max_retry_age);
    } catch (const txbox::Error& e) {
      throw txbox::UsageError(fmt::format("--max-retry-age: {}", e.what()));
    }
    if (!compression.empty()) {
      spdlog::warn("--compression is deprecated: use --broker-property compression.type={}", compression);
      set_kafka_compression(options, compression);
    }
    for (const auto& property : kafka_properties) add_broker_property(options, property, "--kafka-property");
    if (!kafka_properties.empty()) spdlog::warn("--kafka-property is deprecated: use --broker-property");
    for (const auto& property : broker_properties) add_broker_property(options, property, "--broker-property");
    options.schema = txbox::SchemaName(schema);
    std::stop_source stop;
    SignalWatcher signals(stop, options.shutdown_timeout);
    Relay relay(options);
    spdlog::info("started: {} workers, batch size {}, broker {}{}", options.workers,
                 options.batch_size, redact_url(options.broker_url),
                 options.drain ? ", draining" : "");
    auto started = std::chrono::steady_clock::now();
    auto stats = relay.run(stop.get_token());
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    spdlog::info("stopped: {} messages published in {} batches, {} failed attempts, {} dead-lettered, "
                 "{} held back, {} outages, {:.1f} s ({:.0f} msg/s)",
                 stats.published, stats.batches, stats.failed, stats.dead_lettered, stats.held_back,
                 stats.outages, seconds,
                 seconds > 0 ? static_cast<double>(stats.published) / seconds : 0.0);
    return cli::kExitOk;
  });
}

}  // namespace txbox::relay
