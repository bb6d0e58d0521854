// txbox-test-redis-consumer: reads a Redis stream through the inbox into an
// `effects` table (created if missing). Exits 0 once the table holds
// --expect rows, or on SIGTERM/SIGINT after finishing the message in hand.
#include "support/effects_consumer_main.hpp"
#include "txbox/brokers/url.hpp"
#include "txbox/redis/redis.hpp"

int main(int argc, char** argv) {
  txbox::test::EffectsConsumerMain program("txbox-test-redis-consumer", "txbox test consumer for Redis Streams",
                                           "--redis-url");
  txbox::redis::ConsumerOptions options;
  long claim_idle_ms = 30000;
  program.app().add_option("--stream", options.stream)->required();
  program.app().add_option("--group", options.group)->required();
  program.app().add_option("--name", options.consumer_name)->required();
  program.app().add_option("--claim-idle-ms", claim_idle_ms);
  return program.run(argc, argv, options.group, [&](const std::string& redis_url) {
    options.claim_idle = std::chrono::milliseconds(claim_idle_ms);
    options.block = std::chrono::milliseconds(200);
    return txbox::redis::make_consumer(txbox::brokers::parse_broker_url(redis_url), options);
  });
}
