// txbox-test-nats-consumer: reads a NATS subject (durable pull consumer)
// through the inbox into an `effects` table (created if missing). Exits 0
// once the table holds --expect rows, or on SIGTERM/SIGINT after finishing
// the message in hand.
#include "support/effects_consumer_main.hpp"
#include "txbox/brokers/url.hpp"
#include "txbox/nats/nats.hpp"

int main(int argc, char** argv) {
  txbox::test::EffectsConsumerMain program("txbox-test-nats-consumer", "txbox NATS test consumer", "--nats-url");
  txbox::nats::ConsumerOptions options;
  int ack_wait_ms = 2000;
  program.app().add_option("--subject", options.subject)->required();
  program.app().add_option("--durable", options.durable)->required();
  program.app().add_option("--ack-wait-ms", ack_wait_ms);
  return program.run(argc, argv, options.durable, [&](const std::string& nats_url) {
    options.batch = 50;
    options.ack_wait = std::chrono::milliseconds(ack_wait_ms);
    return txbox::nats::make_consumer(txbox::brokers::parse_broker_url(nats_url), options);
  });
}
