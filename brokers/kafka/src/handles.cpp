#include "handles.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <string_view>

#include "txbox/brokers/broker.hpp"

namespace txbox::kafka::detail {

void set_property(rd_kafka_conf_t* conf, const std::string& name, const std::string& value,
                  std::string_view origin) {
  char errstr[512] = {};
  const rd_kafka_conf_res_t res =
      rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr);
  if (res == RD_KAFKA_CONF_OK) {
    return;
  }
  const char* fix =
      res == RD_KAFKA_CONF_UNKNOWN ? "remove it or correct its name" : "correct the value";
  throw brokers::BrokerError(ErrorKind::config,
                             fmt::format("invalid Kafka property '{}' = '{}' (from {}): {}; {} "
                                         "(see librdkafka's CONFIGURATION.md)",
                                         name, value, origin, errstr, fix));
}

namespace {

void log_callback(const rd_kafka_t* rk, int level, const char* facility, const char* message) {
  try {
    spdlog::level::level_enum spd_level = spdlog::level::trace;
    // librdkafka uses syslog levels. It reports every failed connection
    // attempt at LOG_ERR; the adapters log the resulting state changes
    // themselves, so those lines are warnings here.
    const std::string_view facility_name = facility ? facility : "";
    const std::string_view text = message ? message : "";
    if (facility_name == "FATAL" ||
        (facility_name == "CONFWARN" && text.find("enable.gapless.guarantee") != text.npos)) {
      // Both adapters report fatal errors themselves (the publisher with
      // the line that says it replaced its producer, the consumer with a
      // BrokerError), and the publisher sets the experimental
      // enable.gapless.guarantee on purpose (docs/brokers/kafka.md).
      spd_level = spdlog::level::debug;
    } else if (level <= 4) {
      spd_level = spdlog::level::warn;
    } else if (level == 5) {
      spd_level = spdlog::level::info;
    } else if (level == 6) {
      spd_level = spdlog::level::debug;
    }
    spdlog::log(spd_level, "librdkafka {} {}: {}", rk ? rd_kafka_name(rk) : "-",
                facility ? facility : "", message ? message : "");
  } catch (...) {
    // Never let an exception cross into librdkafka.
  }
}

}  // namespace

void install_log_callback(rd_kafka_conf_t* conf) { rd_kafka_conf_set_log_cb(conf, log_callback); }

KafkaPtr create_client(rd_kafka_type_t type, ConfPtr conf, std::string_view what) {
  char errstr[512] = {};
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof errstr);
  if (rk == nullptr) {
    throw brokers::BrokerError(
        ErrorKind::config,
        fmt::format("could not create the Kafka {}: {}; fix the configuration", what, errstr));
  }
  (void)conf.release();  // owned by rk now
  return KafkaPtr(rk);
}

}  // namespace txbox::kafka::detail
