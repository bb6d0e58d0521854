#include "txbox/consumer/subscribe.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "txbox/brokers/url.hpp"
#include "txbox/kafka/kafka.hpp"

namespace txbox::consumer {

std::unique_ptr<brokers::Consumer> subscribe(const std::string& broker_url, const Subscription& subscription) {
  auto url = brokers::parse_broker_url(broker_url);
  if (url.scheme == "kafka") {
    kafka::ConsumerOptions options;
    options.bootstrap_servers = url.host_list(9092);
    options.group_id = subscription.group;
    options.topics = {subscription.source};
    return kafka::make_consumer(options);
  }
  throw std::invalid_argument(
      fmt::format("unknown broker scheme '{}' in '{}': supported is kafka://", url.scheme, broker_url));
}

std::shared_ptr<brokers::Publisher> dead_letter_publisher(const std::string& broker_url) {
  auto url = brokers::parse_broker_url(broker_url);
  if (url.scheme == "kafka") {
    kafka::ProducerOptions options;
    options.bootstrap_servers = url.host_list(9092);
    return kafka::make_publisher(options);
  }
  return nullptr;
}

}  // namespace txbox::consumer
