#include "txbox/relay/options.hpp"
#include "txbox/metrics/http_endpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <toml++/toml.h>

#include "txbox/core/error.hpp"
#include "txbox/outbox/dead_letters.hpp"

namespace txbox::relay {

void validate(const RelayOptions& options) {
  auto fail = [](const std::string& what) { throw txbox::UsageError(what); };
  if (options.database_url.empty())
    fail("no database given: pass --database-url URL or set TXBOX_DATABASE_URL "
         "(for example postgresql://user@127.0.0.1:5432/app)");
  if (options.broker_url.empty())
    fail("no broker given: pass --broker-url URL or set TXBOX_BROKER_URL "
         "(for example kafka://127.0.0.1:9092)");
  if (options.workers < 1 || options.workers > 256)
    fail(fmt::format("--workers {} is out of range: use 1 to 256", options.workers));
  if (options.batch_size < 1 || options.batch_size > 100000)
    fail(fmt::format("--batch-size {} is out of range: use 1 to 100000", options.batch_size));
  if (options.poll_interval.count() < 1 || options.poll_interval > std::chrono::minutes(10))
    fail(fmt::format("--poll-interval {} ms is out of range: use 1 to 600000",
                     options.poll_interval.count()));
  if (options.max_batch_bytes < 1024 || options.max_batch_bytes > (int64_t{1} << 40))
    fail(fmt::format("--max-batch-bytes {} is out of range: use 1024 to 1099511627776 (1 TiB)",
                     options.max_batch_bytes));
  if (options.batches_in_flight < 1 || options.batches_in_flight > 16)
    fail(fmt::format("--batches-in-flight {} is out of range: use 1 to 16", options.batches_in_flight));
  if (options.wakeup != "notify" && options.wakeup != "poll")
    fail(fmt::format("--wakeup '{}' is not supported: use notify (LISTEN/NOTIFY) or poll",
                     options.wakeup));
  if (options.retry.max_retry_age.count() < 0)
    fail("--max-retry-age must not be negative (0s: dead-letter after --max-attempts alone)");
  if (options.probe_timeout.count() < 10)
    fail("--probe-timeout must be at least 10 ms");
  if (options.publish_timeout.count() < 100)
    fail(fmt::format("--publish-timeout {} ms is too short: use at least 100",
                     options.publish_timeout.count()));
  if (options.shutdown_timeout.count() < 0)
    fail("--shutdown-timeout must not be negative");
  if (!options.http_listen.empty()) (void)metrics::parse_listen_address(options.http_listen, "--http-listen");
  if (options.retry.base.count() < 1 || options.retry.factor < 1.0 ||
      options.retry.cap < options.retry.base)
    fail("retry settings are inconsistent: need retry-base >= 1 ms, retry-factor >= 1 and "
         "retry-cap >= retry-base");
  if (options.retry.max_attempts < 1)
    fail(fmt::format("--max-attempts {} is out of range: use 1 or more", options.retry.max_attempts));
  if (options.outage_backoff_cap.count() < 10)
    fail("--outage-backoff-cap must be at least 10 ms");
}

void add_broker_property(RelayOptions& options, std::string_view assignment, std::string_view flag) {
  auto eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0)
    throw txbox::UsageError(fmt::format("{} '{}' is not NAME=VALUE", flag, assignment),
                            "for example --broker-property linger.ms=10");
  options.broker_properties[std::string(assignment.substr(0, eq))] = std::string(assignment.substr(eq + 1));
}

void set_kafka_compression(RelayOptions& options, const std::string& codec) {
  options.broker_properties["compression.type"] = codec;
}

void load_config_file(const std::string& path, RelayOptions& options,
                      std::vector<std::string>* warnings) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw txbox::ConfigError(fmt::format("config file {}:{}:{}: {}", path, where.line,
                                         where.column, e.description()));
  }
  auto key_error = [&](std::string_view key, std::string_view want) {
    return txbox::ConfigError(fmt::format("config file {}: key '{}' must be {}", path, key, want));
  };
  for (auto&& [raw_key, node] : table) {
    std::string key(raw_key.str());
    std::replace(key.begin(), key.end(), '_', '-');
    auto integer = [&]() -> int64_t {
      if (auto v = node.value<int64_t>()) return *v;
      throw key_error(key, "an integer");
    };
    auto text = [&]() -> std::string {
      if (auto v = node.value<std::string>()) return *v;
      throw key_error(key, "a string");
    };
    if (key == "database-url") options.database_url = text();
    else if (key == "broker-url") options.broker_url = text();
    else if (key == "workers") options.workers = static_cast<int>(integer());
    else if (key == "batch-size") options.batch_size = static_cast<int>(integer());
    else if (key == "poll-interval") options.poll_interval = std::chrono::milliseconds(integer());
    else if (key == "publish-timeout") options.publish_timeout = std::chrono::milliseconds(integer());
    else if (key == "shutdown-timeout") options.shutdown_timeout = std::chrono::milliseconds(integer());
    else if (key == "batches-per-lane") {
      (void)integer();
      if (warnings)
        warnings->push_back(fmt::format(
            "config file {}: key 'batches-per-lane' is no longer used (workers keep their lanes and "
            "claim across all of them); remove it",
            path));
    }
    else if (key == "max-batch-bytes") options.max_batch_bytes = integer();
    else if (key == "batches-in-flight") options.batches_in_flight = static_cast<int>(integer());
    else if (key == "wakeup") options.wakeup = text();
    else if (key == "http-listen") options.http_listen = text();
    else if (key == "probe-timeout") options.probe_timeout = std::chrono::milliseconds(integer());
    else if (key == "max-retry-age") {
      try {
        options.retry.max_retry_age = outbox::parse_duration(text());
      } catch (const txbox::Error& e) {
        throw txbox::ConfigError(fmt::format("config file {}: key 'max-retry-age': {}", path, e.what()));
      }
    }
    else if (key == "retry-base") options.retry.base = std::chrono::milliseconds(integer());
    else if (key == "retry-cap") options.retry.cap = std::chrono::milliseconds(integer());
    else if (key == "max-attempts") options.retry.max_attempts = static_cast<int>(integer());
    else if (key == "outage-backoff-cap") options.outage_backoff_cap = std::chrono::milliseconds(integer());
    else if (key == "publish-dead-letters") {
      if (auto v = node.value<bool>()) options.publish_dead_letters = *v;
      else throw key_error(key, "true or false");
    }
    else if (key == "retry-factor") {
      if (auto v = node.value<double>()) options.retry.factor = *v;
      else throw key_error(key, "a number");
    } else if (key == "compression") {
      set_kafka_compression(options, text());
      if (warnings)
        warnings->push_back(fmt::format("config file {}: key 'compression' is deprecated: write "
                                        "\"compression.type\" = \"...\" in the [broker] table",
                                        path));
    }
    else if (key == "schema") {
      try {
        options.schema = txbox::SchemaName(text());
      } catch (const txbox::Error& e) {
        throw txbox::ConfigError(fmt::format("config file {}: key 'schema': {}", path, e.what()));
      }
    }
    else if (key == "drain") {
      if (auto v = node.value<bool>()) options.drain = *v;
      else throw key_error(key, "true or false");
    } else if (key == "broker" || key == "kafka") {
      auto* properties = node.as_table();
      if (!properties) throw key_error(key, fmt::format("a table of broker client properties ([{}])", key));
      if (key == "kafka" && warnings)
        warnings->push_back(fmt::format("config file {}: the [kafka] table is deprecated: rename it to [broker]",
                                        path));
      for (auto&& [property, value] : *properties) {
        std::string name(property.str());
        if (value.is_boolean()) options.broker_properties[name] = value.value<bool>().value() ? "true" : "false";
        else if (value.is_integer()) options.broker_properties[name] = std::to_string(value.value<int64_t>().value());
        else if (value.is_string()) options.broker_properties[name] = value.value<std::string>().value();
        else throw key_error(fmt::format("{}.{}", key, property.str()), "a string, integer or boolean");
      }
    } else {
      throw txbox::ConfigError(fmt::format(
          "config file {}: unknown key '{}'; known keys: database-url, broker-url, schema, workers, "
          "batch-size, max-batch-bytes, batches-in-flight, wakeup, poll-interval, publish-timeout, "
          "shutdown-timeout, probe-timeout, retry-base, retry-factor, retry-cap, max-attempts, "
          "max-retry-age, outage-backoff-cap, publish-dead-letters, drain, http-listen, [broker]",
          path, raw_key.str()));
    }
  }
}

}  // namespace txbox::relay
