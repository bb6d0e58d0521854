// The factories with the signatures the broker registry (txbox/registry) uses.
#include "txbox/nats/nats.hpp"

namespace txbox::nats {

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  brokers::require_no_properties("the NATS consumer", subscription.properties);
  ConsumerOptions options;
  options.subject = subscription.source;
  options.durable = subscription.group;
  return make_consumer(url, options);
}

}  // namespace txbox::nats
