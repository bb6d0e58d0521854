#include "txbox/consumer/subscribe.hpp"

#include "txbox/registry/registry.hpp"

namespace txbox::consumer {

std::unique_ptr<brokers::Consumer> subscribe(const std::string& broker_url, const Subscription& subscription) {
  return brokers::open_consumer(broker_url, subscription);
}

std::shared_ptr<brokers::Publisher> dead_letter_publisher(const std::string& broker_url) {
  if (brokers::dead_letters_natively(broker_url)) return nullptr;
  return brokers::open_publisher(broker_url);
}

}  // namespace txbox::consumer
