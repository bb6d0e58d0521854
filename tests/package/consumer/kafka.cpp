// find_package(txbox COMPONENTS kafka): the Kafka adapter, brokers and core.
#include <cstdio>
#include <txbox/kafka/kafka.hpp>

int main(int argc, char** argv) {
  if (argc > 1) {  // not run by the check; links the producer, hence librdkafka
    txbox::kafka::ProducerOptions options;
    options.bootstrap_servers = argv[1];
    return txbox::kafka::make_publisher(options) ? 0 : 1;
  }
  const int partition = txbox::kafka::murmur2_partition("order-42", 3);
  std::printf("order-42 -> partition %d of 3\n", partition);
  return partition >= 0 && partition < 3 ? 0 : 1;
}
