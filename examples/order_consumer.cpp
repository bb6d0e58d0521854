// Example consumer: reads OrderPlaced events from Kafka and keeps a
// per-customer total, exactly once per event thanks to the inbox.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <pqxx/pqxx>

#include "example_args.hpp"
#include "order_totals.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/consumer/subscribe.hpp"

int main(int argc, char** argv) {
  std::string database_url, broker_url, topic = "orders", group = "billing";
  int expect = 0, timeout_s = 120;
  txbox::consumer::InboxConsumerOptions options;
  CLI::App app{"Example consumer: order events -> customer totals, deduplicated by the txbox inbox"};
  example::add_database_url_option(app, database_url);
  app.add_option("--broker-url", broker_url, "kafka://host:port, amqp://..., nats://..., redis://...")->required();
  app.add_option("--topic", topic, "topic, queue, subject or stream to read");
  app.add_option("--group", group, "consumer group and inbox consumer name");
  app.add_option("--expect", expect, "stop after this many messages processed (0 = run until timeout)");
  app.add_option("--timeout", timeout_s, "give up after this many seconds");
  app.add_option("--max-batch", options.max_batch, "events applied in one transaction (1 = one at a time)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--workers", options.workers, "lanes applying different customers' events in parallel")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  try {
    example::create_table(database_url, example::kCustomerTotalsTable);
    auto consumer = txbox::consumer::subscribe(broker_url, {topic, group});
    txbox::consumer::InboxConsumer inbox_consumer(*consumer, database_url, txbox::inbox::Inbox(group),
                                                  example::add_order_to_customer_totals, options);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    auto stats = inbox_consumer.run({}, [&](const txbox::consumer::ConsumeStats& s) {
      return (expect > 0 && s.processed >= static_cast<uint64_t>(expect)) ||
             std::chrono::steady_clock::now() > deadline;
    });
    consumer->close();
    std::printf("order consumer: processed %llu events, skipped %llu duplicates\n",
                static_cast<unsigned long long>(stats.processed),
                static_cast<unsigned long long>(stats.duplicates));
    return expect > 0 && stats.processed < static_cast<uint64_t>(expect) ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "order consumer: error: %s\n", e.what());
    return 1;
  }
}
