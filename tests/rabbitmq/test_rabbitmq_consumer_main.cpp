// txbox-test-rabbitmq-consumer: reads a RabbitMQ queue through the inbox
// into an `effects` table (created if missing). Exits 0 once the table
// holds --expect rows, or on SIGTERM/SIGINT after finishing the message in hand.
#include "support/effects_consumer_main.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

int main(int argc, char** argv) {
  txbox::test::EffectsConsumerMain program("txbox-test-rabbitmq-consumer", "txbox RabbitMQ test consumer",
                                           "--broker-url");
  std::string consumer_name = "billing";
  txbox::rabbitmq::ConsumerOptions options;
  program.app().add_option("--queue", options.queue)->required();
  program.app().add_option("--consumer", consumer_name);
  return program.run(argc, argv, consumer_name, [&](const std::string& broker_url) {
    return txbox::rabbitmq::make_consumer(txbox::brokers::parse_broker_url(broker_url), options);
  });
}
