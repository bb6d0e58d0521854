#include <fmt/format.h>

#include <stdexcept>

#include "txbox/brokers/url.hpp"
#include "txbox/kafka/kafka.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"
#include "txbox/nats/nats.hpp"
#include "txbox/redis/redis.hpp"
#include "txbox/relay/relay.hpp"

namespace txbox::relay {

namespace {
constexpr const char* kSupported =
    "supported are kafka://host:port[,host:port]"
    ", amqp://user:pass@host:port/vhost"
    ", nats://[user:pass@]host:port[,host:port][?create_streams=true]"
    ", redis://[:password@]host:port[/db][?maxlen=N&dedup_ttl=SECONDS]"
    ;

bool supported(const std::string& scheme) {
  return scheme == "kafka"
         || scheme == "amqp"
         || scheme == "nats"
         || scheme == "redis"
      ;
}

[[noreturn]] void unknown_scheme(const brokers::BrokerUrl& url) {
  throw std::invalid_argument(fmt::format("unknown broker scheme '{}' in broker URL '{}': {}",
                                          url.scheme, url.redacted, kSupported));
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
  if (url.scheme == "amqp") {
    return rabbitmq::make_publisher(url, options.broker_properties);
  }
  if (url.scheme == "nats") return nats::make_publisher(url, options.broker_properties);
  if (url.scheme == "redis") return redis::make_publisher(url, options.broker_properties);
  unknown_scheme(url);
}

}  // namespace txbox::relay
