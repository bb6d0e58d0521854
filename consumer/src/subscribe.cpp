#include "txbox/consumer/subscribe.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "txbox/brokers/url.hpp"
#include <unistd.h>

#include "txbox/kafka/kafka.hpp"
#include "txbox/nats/nats.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"
#include "txbox/redis/redis.hpp"

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
  if (url.scheme == "amqp") {
    // The queue, with its dead-letter exchange and queue, declared if missing.
    rabbitmq::ConsumerOptions options;
    options.queue = subscription.source;
    return rabbitmq::make_consumer(url, options);
  }
  if (url.scheme == "nats") {
    nats::ConsumerOptions options;
    options.subject = subscription.source;
    options.durable = subscription.group;
    return nats::make_consumer(url, options);
  }
  if (url.scheme == "redis") {
    redis::ConsumerOptions options;
    options.stream = subscription.source;
    options.group = subscription.group;
    // Stable across restarts on this host, so a restarted consumer first
    // reads its own pending entries (in order) instead of waiting for
    // another member to claim them.
    char host[256] = "consumer";
    gethostname(host, sizeof host - 1);
    options.consumer_name = host;
    return redis::make_consumer(url, options);
  }
  throw std::invalid_argument(fmt::format(
      "unknown broker scheme '{}' in '{}': supported are kafka://, amqp://, nats://, redis://", url.scheme,
      broker_url));
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
