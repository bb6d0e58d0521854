#include <fmt/format.h>

#include <stdexcept>

#include "txbox/brokers/url.hpp"
#include "txbox/kafka/kafka.hpp"
// @rabbitmq-include@
// @nats-include@
// @redis-include@
#include "txbox/relay/relay.hpp"

namespace txbox::relay {

namespace {
constexpr const char* kSupported =
    "supported are kafka://host:port[,host:port]"
    // @rabbitmq-scheme-text@
    // @nats-scheme-text@
    // @redis-scheme-text@
    ;

bool supported(const std::string& scheme) {
  return scheme == "kafka"
         // @rabbitmq-scheme@
         // @nats-scheme@
         // @redis-scheme@
      ;
}

[[noreturn]] void unknown_scheme(const brokers::BrokerUrl& url) {
  throw std::invalid_argument(fmt::format("unknown broker scheme '{}' in broker URL '{}': {}",
                                          url.scheme, url.original, kSupported));
}
}  // namespace

void check_broker_url(const std::string& broker_url) {
  auto url = brokers::parse_broker_url(broker_url);
  if (!supported(url.scheme)) unknown_scheme(url);
}

std::shared_ptr<brokers::Publisher> make_publisher(const RelayOptions& options) {
  auto url = brokers::parse_broker_url(options.broker_url);
  if (url.scheme == "kafka") {
    kafka::ProducerOptions producer;
    producer.bootstrap_servers = url.host_list(9092);
    producer.compression = options.compression;
    producer.properties = options.broker_properties;
    return kafka::make_publisher(producer);
  }
  // @rabbitmq-publisher@
  // @nats-publisher@
  // @redis-publisher@
  unknown_scheme(url);
}

}  // namespace txbox::relay
