// The factories with the signatures the broker registry (txbox/registry) uses.
#include <unistd.h>

#include "txbox/redis/redis.hpp"

namespace txbox::redis {

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  brokers::require_no_properties("the Redis consumer", subscription.properties);
  ConsumerOptions options;
  options.stream = subscription.source;
  options.group = subscription.group;
  options.consumer_name = subscription.member;
  if (options.consumer_name.empty()) {
    // Stable across restarts on this host, so a restarted consumer first
    // reads its own pending entries (in order) instead of waiting for
    // another member to claim them.
    char host[256] = "consumer";
    gethostname(host, sizeof host - 1);
    options.consumer_name = host;
  }
  return make_consumer(url, options);
}

}  // namespace txbox::redis
