// txbox-test-consumer: reads a topic through the inbox into an `effects`
// table (created if missing). Exits 0 once the table holds --expect rows, or
// on SIGTERM/SIGINT after finishing the message in hand.
#include "support/effects_consumer_main.hpp"
#include "txbox/kafka/kafka.hpp"

int main(int argc, char** argv) {
  txbox::test::EffectsConsumerMain program("txbox-test-consumer", "txbox test consumer", "--bootstrap-servers");
  std::string topic, group;
  program.app().add_option("--topic", topic)->required();
  program.app().add_option("--group", group)->required();
  return program.run(argc, argv, group, [&](const std::string& bootstrap) {
    txbox::kafka::ConsumerOptions options;
    options.bootstrap_servers = bootstrap;
    options.group_id = group;
    options.topics = {topic};
    options.session_timeout = std::chrono::milliseconds(6000);
    options.properties["heartbeat.interval.ms"] = "1000";
    return txbox::kafka::make_consumer(options);
  });
}
