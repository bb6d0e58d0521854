#include "txbox/registry/registry.hpp"

#include <fmt/format.h>

#include "txbox/brokers/url.hpp"
#include "txbox/kafka/kafka.hpp"
#include "txbox/nats/nats.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"
#include "txbox/redis/redis.hpp"

namespace txbox::brokers {

namespace {

struct Adapter {
  std::string_view scheme;
  std::string_view url_form;
  std::unique_ptr<Publisher> (*open_publisher)(const BrokerUrl&, const Properties&);
  std::unique_ptr<Consumer> (*open_consumer)(const BrokerUrl&, const Subscription&);
  bool native_dead_letters;  // Consumer::dead_letter() settles a message on its own
};

// One line per broker. Each adapter's make_publisher(BrokerUrl, Properties)
// and make_consumer(BrokerUrl, Subscription) overloads are picked by the
// pointer types.
constexpr Adapter kAdapters[] = {
    {"kafka", "kafka://host:port[,host:port][?compression=lz4]", kafka::make_publisher, kafka::make_consumer,
     false},
    {"amqp", "amqp://user:pass@host:port[/vhost]", rabbitmq::make_publisher, rabbitmq::make_consumer,
     true},
    {"nats", "nats://[user:pass@]host:port[,host:port][?create_streams=true]", nats::make_publisher,
     nats::make_consumer, true},
    {"redis", "redis://[user:pass@]host:port[/db][?maxlen=N&dedup_ttl=SECONDS]", redis::make_publisher,
     redis::make_consumer, true},
};

std::pair<BrokerUrl, const Adapter*> resolve(std::string_view text) {
  BrokerUrl url = parse_broker_url(text);
  for (const auto& adapter : kAdapters)
    if (adapter.scheme == url.scheme) return {std::move(url), &adapter};
  throw UsageError(fmt::format("unknown broker scheme '{}' in broker URL '{}'", url.scheme, url.redacted),
                   fmt::format("supported are {}", fmt::join(supported_broker_urls(), ", ")));
}

}  // namespace

std::unique_ptr<Publisher> open_publisher(std::string_view url, const Properties& properties) {
  auto [parsed, adapter] = resolve(url);
  return adapter->open_publisher(parsed, properties);
}

std::unique_ptr<Consumer> open_consumer(std::string_view url, const Subscription& subscription) {
  auto [parsed, adapter] = resolve(url);
  return adapter->open_consumer(parsed, subscription);
}

void check_broker_url(std::string_view url) { resolve(url); }

bool dead_letters_natively(std::string_view url) { return resolve(url).second->native_dead_letters; }

std::vector<std::string> supported_broker_urls() {
  std::vector<std::string> forms;
  for (const auto& adapter : kAdapters) forms.emplace_back(adapter.url_form);
  return forms;
}

}  // namespace txbox::brokers
