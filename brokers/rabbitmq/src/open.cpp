// The factories with the signatures the broker registry (txbox/registry) uses.
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::rabbitmq {

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  brokers::require_no_properties("the RabbitMQ consumer", subscription.properties);
  // The queue, with its dead-letter exchange and queue, declared if missing.
  ConsumerOptions options;
  options.queue = subscription.source;
  return make_consumer(url, options);
}

}  // namespace txbox::rabbitmq
