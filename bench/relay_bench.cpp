// Relay throughput: fill the outbox, drain it, report messages/s.
//
// Three runs over the same data set, each on a freshly filled outbox:
//   raw-sql      the claim-and-delete SQL alone (one statement per batch, no
//                lanes, no broker): what PostgreSQL can do on this machine.
//   relay-null   the relay's full SQL path (lanes, advisory locks, claim,
//                delete) with a publisher that confirms instantly: the
//                relay's own cost.
//   relay-<url>  the real relay publishing to each broker given and waiting
//                for every confirmation.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <pqxx/pqxx>
#include <thread>

#include "txbox/outbox/outbox.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/relay/relay.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct NullPublisher : txbox::brokers::Publisher {
  std::vector<txbox::brokers::PublishResult> publish(std::span<const txbox::brokers::Message> messages,
                                                     std::chrono::milliseconds) override {
    return std::vector<txbox::brokers::PublishResult>(messages.size(), {true, {}, {}});
  }
  bool healthy() const override { return true; }
};

void fill(const std::string& url, const std::string& topic, int messages, int keys, int payload_bytes) {
  pqxx::connection conn(url);
  {
    pqxx::nontransaction tx(conn);
    tx.exec0("TRUNCATE txbox.outbox");
  }
  txbox::outbox::Outbox outbox;
  std::string payload(static_cast<size_t>(payload_bytes), 'x');
  std::vector<txbox::outbox::Message> batch;
  for (int i = 0; i < messages; ++i) {
    batch.push_back({topic, fmt::format("key-{}", i % keys), payload, {{"content-type", "application/octet-stream"}}, {}});
    if (batch.size() == 5000 || i + 1 == messages) {
      pqxx::work tx(conn);
      outbox.enqueue(tx, batch);
      tx.commit();
      batch.clear();
    }
  }
  pqxx::nontransaction tx(conn);
  tx.exec0("VACUUM ANALYZE txbox.outbox");
}

double raw_sql(const std::string& url, int workers, int batch_size) {
  std::atomic<long> moved{0};
  auto start = Clock::now();
  std::vector<std::jthread> threads;
  for (int w = 0; w < workers; ++w)
    threads.emplace_back([&] {
      pqxx::connection conn(url);
      conn.prepare("claim_delete",
                   "WITH c AS (SELECT id FROM txbox.outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) "
                   "DELETE FROM txbox.outbox o USING c WHERE o.id = c.id "
                   "RETURNING o.message_id, o.destination, o.message_key, o.payload, o.headers");
      while (true) {
        pqxx::work tx(conn);
        auto n = tx.exec_prepared("claim_delete", batch_size).size();
        tx.commit();
        if (n == 0) break;
        moved += static_cast<long>(n);
      }
    });
  threads.clear();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(moved.load()) / seconds;
}

double relay_run(txbox::relay::RelayOptions options, std::shared_ptr<txbox::brokers::Publisher> publisher,
                 uint64_t expected) {
  options.drain = true;
  txbox::relay::Relay relay(options, std::move(publisher));
  auto start = Clock::now();
  auto stats = relay.run({});
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (stats.published != expected)
    spdlog::warn("published {} of {} messages", stats.published, expected);
  return static_cast<double>(stats.published) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  std::string database_url;
  std::vector<std::string> broker_urls;
  std::string topic;
  int messages = 200000, keys = 1000, payload = 200, workers = 4, batch_size = 500, repeat = 1;
  CLI::App app{"txbox relay throughput benchmark"};
  app.add_option("--database-url", database_url, "database to use (its txbox.outbox is truncated!)")->required();
  app.add_option("--broker-url", broker_urls, "broker(s) for the real runs, e.g. kafka://127.0.0.1:9092 (repeatable)")
      ->required();
  app.add_option("--topic", topic, "destination (topic, queue, subject, stream); default bench-<time>");
  app.add_option("--messages", messages, "messages per run (default 200000)");
  app.add_option("--keys", keys, "distinct message keys (default 1000)");
  app.add_option("--payload-bytes", payload, "payload size (default 200)");
  app.add_option("--workers", workers, "relay workers / SQL connections (default 4)");
  app.add_option("--batch-size", batch_size, "rows per batch (default 500)");
  app.add_option("--repeat", repeat, "runs of each kind; the best is reported (default 1)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  try {
    {
      pqxx::connection conn(database_url);
      txbox::outbox::migrate(conn);
    }
    if (topic.empty()) topic = fmt::format("bench-{}", std::chrono::system_clock::now().time_since_epoch().count());
    txbox::relay::RelayOptions options;
    options.database_url = database_url;
    options.workers = workers;
    options.batch_size = batch_size;
    options.poll_interval = std::chrono::milliseconds(10);

    double best_raw = 0, best_null = 0;
    for (int r = 0; r < repeat; ++r) {
      fill(database_url, topic, messages, keys, payload);
      best_raw = std::max(best_raw, raw_sql(database_url, workers, batch_size));
      fill(database_url, topic, messages, keys, payload);
      options.broker_url = broker_urls.front();
      best_null = std::max(best_null, relay_run(options, std::make_shared<NullPublisher>(), messages));
    }
    fmt::print("| run | messages/s | share of raw SQL limit |\n|---|---:|---:|\n");
    fmt::print("| raw SQL claim-and-delete, no broker ({} connections) | {:.0f} | 100% |\n", workers, best_raw);
    fmt::print("| relay, instantly-confirming null broker | {:.0f} | {:.0f}% |\n", best_null, 100 * best_null / best_raw);
    for (const auto& broker_url : broker_urls) {
      options.broker_url = broker_url;
      auto publisher = txbox::relay::make_publisher(options);
      double best = 0;
      for (int r = 0; r < repeat; ++r) {
        fill(database_url, topic, messages, keys, payload);
        best = std::max(best, relay_run(options, publisher, messages));
      }
      auto scheme = broker_url.substr(0, broker_url.find(':'));
      fmt::print("| relay -> {} (every message confirmed) | {:.0f} | {:.0f}% |\n", scheme, best, 100 * best / best_raw);
      std::fflush(stdout);
    }
    fmt::print("\n{} messages of {} bytes over {} keys, {} workers, batch size {}, best of {}\n", messages, payload,
               keys, workers, batch_size, repeat);
  } catch (const std::exception& e) {
    fmt::print(stderr, "txbox-bench: error: {}\n", e.what());
    return 1;
  }
}
