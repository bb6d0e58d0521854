// The factories with the signatures the broker registry (txbox/registry) uses.

#include "txbox/kafka/kafka.hpp"

namespace txbox::kafka {

namespace {
constexpr int kDefaultPort = 9092;
}

std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties) {
  ProducerOptions options;
  options.bootstrap_servers = url.host_list(kDefaultPort);
  for (const auto& [name, value] : url.query) {
    if (name == "compression") {
      options.compression = value;  // checked by librdkafka, which names the valid codecs
    } else {
      throw txbox::UsageError("unknown option '" + name + "' in the Kafka URL '" + url.redacted + "'",
                              "the URL takes ?compression=none|gzip|snappy|lz4|zstd; pass librdkafka "
                              "properties with --broker-property NAME=VALUE");
    }
  }
  options.properties = properties;
  return make_publisher(options);
}

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  if (!url.query.empty())
    throw txbox::UsageError("the Kafka URL '" + url.redacted + "' has options a consumer does not take",
                            "pass librdkafka properties as the subscription's properties");
  ConsumerOptions options;
  options.bootstrap_servers = url.host_list(kDefaultPort);
  options.group_id = subscription.group;
  options.topics = {subscription.source};
  options.properties = subscription.properties;
  return make_consumer(options);
}

}  // namespace txbox::kafka
