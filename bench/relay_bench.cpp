// txbox-bench: what the relay costs, measured beside a reference taken in
// the same run (this machine is shared and noisy: only ratios travel).
//
//   txbox-bench throughput  fill the outbox, drain it; the references are the
//                           fastest claim-and-delete SQL loop with no broker
//                           (several shapes, the best one counts) and, per
//                           broker, the adapter publishing the same messages
//                           with no database (the broker's own ceiling).
//   txbox-bench latency     writers commit single-row transactions at fixed
//                           rates; commit -> broker confirmation per message.
//   txbox-bench consumer    the consumer side (bench/consumer_bench.cpp).
//
// Each run appends one JSON object per line to --json and prints a Markdown
// table. bench/run.sh runs everything and draws the charts.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <pqxx/pqxx>
#include <thread>
#include <unordered_map>

#include "bench_common.hpp"
#include "consumer_bench.hpp"
#include "txbox/brokers/url.hpp"
#include "txbox/registry/registry.hpp"
#include "txbox/outbox/outbox.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/relay/relay.hpp"

namespace {

using namespace txbox::bench;
using txbox::brokers::Message;
using txbox::brokers::PendingPublish;
using txbox::brokers::Publisher;
using txbox::brokers::PublishResult;

// Confirms everything at once: the relay's own cost.
struct NullPublisher : Publisher {
  struct Confirmed : PendingPublish {
    size_t n;
    explicit Confirmed(size_t count) : n(count) {}
    std::vector<PublishResult> wait(Clock::time_point) override {
      return std::vector<PublishResult>(n, {true, {}, {}});
    }
  };
  std::unique_ptr<PendingPublish> start(std::span<const Message> messages) override {
    return std::make_unique<Confirmed>(messages.size());
  }
  bool healthy() const override { return true; }
  bool probe(std::chrono::milliseconds) override { return true; }
};

// Wraps a publisher and records when each message was confirmed (when the
// relay learns it), and the first hand-over and the last confirmation.
class TimingPublisher : public Publisher {
 public:
  explicit TimingPublisher(std::shared_ptr<Publisher> inner) : inner_(std::move(inner)) {}

  std::unique_ptr<PendingPublish> start(std::span<const Message> messages) override {
    {
      std::lock_guard lock(mutex_);
      if (!first_) first_ = Clock::now();
    }
    return std::make_unique<Timed>(*this, inner_->start(messages), messages);
  }
  bool healthy() const override { return inner_->healthy(); }
  bool probe(std::chrono::milliseconds timeout) override { return inner_->probe(timeout); }

  // Message id -> time of confirmation (only with record_ids).
  std::unordered_map<std::string, Clock::time_point> take_confirmations() {
    std::lock_guard lock(mutex_);
    return std::exchange(confirmed_at_, {});
  }
  void record_ids(bool on) { record_ids_ = on; }
  uint64_t confirmed() const { return confirmed_.load(); }
  double active_seconds() const {
    std::lock_guard lock(mutex_);
    return first_ && last_ ? std::chrono::duration<double>(*last_ - *first_).count() : 0.0;
  }

 private:
  struct Timed : PendingPublish {
    TimingPublisher& owner;
    std::unique_ptr<PendingPublish> inner;
    std::span<const Message> messages;
    Timed(TimingPublisher& o, std::unique_ptr<PendingPublish> p, std::span<const Message> m)
        : owner(o), inner(std::move(p)), messages(m) {}
    std::vector<PublishResult> wait(Clock::time_point deadline) override {
      auto results = inner->wait(deadline);
      const auto now = Clock::now();
      size_t ok = 0;
      std::lock_guard lock(owner.mutex_);
      for (size_t i = 0; i < results.size(); ++i) {
        if (!results[i].confirmed) continue;
        ++ok;
        if (owner.record_ids_) owner.confirmed_at_.emplace(messages[i].message_id, now);
      }
      if (ok) owner.last_ = now;
      owner.confirmed_ += ok;
      return results;
    }
  };

  std::shared_ptr<Publisher> inner_;
  mutable std::mutex mutex_;
  std::optional<Clock::time_point> first_, last_;
  std::unordered_map<std::string, Clock::time_point> confirmed_at_;
  std::atomic<bool> record_ids_{false};
  std::atomic<uint64_t> confirmed_{0};
};

void reset_outbox(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  tx.exec0("TRUNCATE txbox.outbox, txbox.dead_letters");
}

void fill(const std::string& url, const std::string& topic, int messages, int keys, int payload_bytes) {
  reset_outbox(url);
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  // Server-side, in one statement per 100,000 rows: the fill is not measured.
  for (int done = 0; done < messages; done += 100000) {
    const int n = std::min(100000, messages - done);
    tx.exec0(fmt::format(
        "INSERT INTO txbox.outbox (destination, message_key, payload, headers) "
        "SELECT {}, 'key-' || ((i + {}) % {}), convert_to(repeat('x', {}), 'UTF8'), "
        "'{{\"content-type\":\"application/octet-stream\"}}' FROM generate_series(0, {}) i",
        tx.quote(topic), done, keys, payload_bytes, n - 1));
  }
  tx.exec0("VACUUM ANALYZE txbox.outbox");
}

// The claim-and-delete SQL alone, as fast as it goes with `connections`
// connections and `rows` rows a statement, in the order of the outbox's
// only index, (lane, id).
double raw_sql(const std::string& url, int connections, int rows) {
  std::atomic<long> moved{0};
  auto start = Clock::now();
  {
    std::vector<std::jthread> threads;
    for (int w = 0; w < connections; ++w)
      threads.emplace_back([&] {
        pqxx::connection conn(url);
        conn.prepare("claim_delete",
                     "WITH c AS (SELECT lane, id FROM txbox.outbox ORDER BY lane, id LIMIT $1 FOR UPDATE SKIP LOCKED) "
                     "DELETE FROM txbox.outbox o USING c WHERE o.lane = c.lane AND o.id = c.id "
                     "RETURNING o.id, o.message_id, o.destination, o.message_key, o.payload, o.headers");
        for (;;) {
          pqxx::work tx(conn);
          auto n = tx.exec_prepared("claim_delete", rows).size();
          tx.commit();
          if (n == 0) break;
          moved += static_cast<long>(n);
        }
      });
  }
  return static_cast<double>(moved.load()) / seconds_since(start);
}

txbox::relay::RelayOptions relay_options(const std::string& database_url, int workers, int batch_size) {
  txbox::relay::RelayOptions options;
  options.database_url = database_url;
  options.broker_url = "kafka://unused:1";
  options.workers = workers;
  options.batch_size = batch_size;
  options.drain = true;
  return options;
}

// Drains the outbox with the relay; the rate counts from the first hand-over
// to the last confirmation (not the process's start-up and drain check).
double relay_rate(txbox::relay::RelayOptions options, std::shared_ptr<Publisher> publisher, uint64_t expected) {
  auto timing = std::make_shared<TimingPublisher>(std::move(publisher));
  txbox::relay::Relay relay(options, timing);
  auto stats = relay.run({});
  if (stats.published != expected)
    spdlog::warn("published {} of {} messages ({} dead-lettered)", stats.published, expected, stats.dead_lettered);
  const double seconds = timing->active_seconds();
  return seconds > 0 ? static_cast<double>(stats.published) / seconds : 0.0;
}

// The broker's own publish ceiling: the adapter publishing the same messages
// with no database, from `connections` threads that each keep `in_flight`
// batches in flight, as the relay's workers do.
double publish_ceiling(Publisher& publisher, const std::string& topic, int messages, int keys, int payload_bytes,
                       int connections, int batch_size, int in_flight) {
  std::vector<Message> all;
  all.reserve(static_cast<size_t>(messages));
  for (int i = 0; i < messages; ++i)
    all.push_back({txbox::outbox::new_message_id(), topic, fmt::format("key-{}", i % keys),
                   std::string(static_cast<size_t>(payload_bytes), 'x'),
                   {{"content-type", "application/octet-stream"}}});
  auto start = Clock::now();
  const long confirmed = publish_all(publisher, all, connections, batch_size, in_flight);
  if (confirmed != messages) spdlog::warn("ceiling: {} of {} confirmed", confirmed, messages);
  return static_cast<double>(confirmed) / seconds_since(start);
}

struct ThroughputArgs {
  std::string database_url;
  std::vector<std::string> broker_urls;
  std::string topic;
  std::string label = "200k";
  std::string json_path;
  int messages = 200000, keys = 1000, payload = 200, workers = 4, batch_size = 500, repeat = 1;
  bool skip_reference = false;
  std::vector<std::string> properties;  // NAME=VALUE for the broker client
};

int throughput(const ThroughputArgs& a) {
  const std::string topic =
      a.topic.empty() ? fmt::format("bench-{}", std::chrono::system_clock::now().time_since_epoch().count()) : a.topic;
  double best_raw = 0;
  std::string best_shape;
  json raw_runs = json::array();
  if (!a.skip_reference) {
    // The reference: the best of the shapes, so a ratio cannot look better
    // through a weaker reference.
    const std::vector<std::pair<int, int>> shapes{{1, 1000}, {a.workers, a.batch_size}, {a.workers, 1000}};
    for (int r = 0; r < a.repeat; ++r) {
      for (auto [connections, rows] : shapes) {
        fill(a.database_url, topic, a.messages, a.keys, a.payload);
        const double rate = raw_sql(a.database_url, connections, rows);
        raw_runs.push_back({{"connections", connections}, {"rows_per_statement", rows}, {"rate", rate}});
        if (rate > best_raw) {
          best_raw = rate;
          best_shape = fmt::format("{} connection{}, {} rows a statement", connections, connections == 1 ? "" : "s", rows);
        }
      }
    }
  }
  json record{{"kind", "throughput"}, {"label", a.label},   {"messages", a.messages}, {"keys", a.keys},
              {"repeat", a.repeat},
              {"payload_bytes", a.payload}, {"workers", a.workers}, {"batch_size", a.batch_size},
              {"raw_sql", best_raw}, {"raw_sql_shape", best_shape}, {"raw_sql_runs", raw_runs}};
  fmt::print("\n{} messages of {} B over {} keys, {} workers, batch {}:\n\n", a.messages, a.payload, a.keys, a.workers,
             a.batch_size);
  fmt::print("| run | messages/s | reference | ratio |\n|---|---:|---|---:|\n");
  if (!a.skip_reference)
    fmt::print("| raw SQL claim-and-delete, no broker (best: {}) | {:.0f} | | |\n", best_shape, best_raw);
  auto options = relay_options(a.database_url, a.workers, a.batch_size);
  for (const auto& p : a.properties)
    if (auto eq = p.find('='); eq != std::string::npos) options.broker_properties[p.substr(0, eq)] = p.substr(eq + 1);
  double best_null = 0;
  for (int r = 0; r < a.repeat && !a.skip_reference; ++r) {
    fill(a.database_url, topic, a.messages, a.keys, a.payload);
    best_null = std::max(best_null, relay_rate(options, std::make_shared<NullPublisher>(), a.messages));
  }
  if (!a.skip_reference) {
    record["relay_null"] = best_null;
    fmt::print("| relay, instantly-confirming null broker | {:.0f} | raw SQL | {:.2f} |\n", best_null, best_null / best_raw);
  }
  json brokers = json::array();
  for (const auto& url : a.broker_urls) {
    options.broker_url = url;
    std::shared_ptr<txbox::brokers::Publisher> publisher = txbox::brokers::open_publisher(url, options.broker_properties);
    double best = 0;
    for (int r = 0; r < a.repeat; ++r) {
      fill(a.database_url, topic, a.messages, a.keys, a.payload);
      best = std::max(best, relay_rate(options, publisher, a.messages));
    }
    const std::string scheme = scheme_of(url);
    json entry{{"broker", scheme}, {"relay", best}};
    // Every broker's own ceiling, for the record; the reference of RabbitMQ
    // and NATS, whose brokers are slower than the SQL.
    double ceiling = 0;
    for (int r = 0; r < a.repeat; ++r)
      ceiling = std::max(ceiling, publish_ceiling(*publisher, topic, a.messages, a.keys, a.payload, a.workers,
                                                  a.batch_size, options.batches_in_flight));
    entry["ceiling"] = ceiling;
    // With the database and the broker sharing the same cores, their costs
    // per message add up: the relay cannot beat 1 / (1/null + 1/ceiling).
    if (best_null > 0) entry["shared_cpu_bound"] = 1.0 / (1.0 / best_null + 1.0 / ceiling);
    if (scheme == "amqp" || scheme == "nats") {
      fmt::print("| relay -> {} | {:.0f} | its publish ceiling {:.0f} | {:.2f} |\n", scheme, best, ceiling,
                 best / ceiling);
    } else if (best_raw > 0) {
      fmt::print("| relay -> {} | {:.0f} | raw SQL (its publish ceiling {:.0f}) | {:.2f} |\n", scheme, best, ceiling,
                 best / best_raw);
    } else {
      fmt::print("| relay -> {} | {:.0f} | (its publish ceiling {:.0f}) | |\n", scheme, best, ceiling);
    }
    brokers.push_back(entry);
    std::fflush(stdout);
  }
  record["brokers"] = brokers;
  append_json(a.json_path, record);
  reset_outbox(a.database_url);
  return 0;
}

struct LatencyArgs {
  std::string database_url;
  std::string broker_url;
  std::string json_path;
  std::vector<int> rates{100, 1000, 5000};
  int clients = 4;
  int seconds = 20;
};

int latency(const LatencyArgs& a) {
  const std::string topic = fmt::format("latency-{}", std::chrono::system_clock::now().time_since_epoch().count());
  reset_outbox(a.database_url);
  txbox::relay::RelayOptions options;  // the relay's defaults
  options.database_url = a.database_url;
  options.broker_url = a.broker_url;
  auto timing = std::make_shared<TimingPublisher>(txbox::brokers::open_publisher(a.broker_url));
  timing->record_ids(true);
  txbox::relay::Relay relay(options, timing);
  std::stop_source stop;
  std::jthread relay_thread([&] { relay.run(stop.get_token()); });
  // Warm up: the topic exists and the producer knows its partitions before
  // anything is measured (a one-time cost), then the relay idles.
  {
    pqxx::connection conn(a.database_url);
    pqxx::work tx(conn);
    txbox::outbox::Outbox().enqueue(tx, {topic, "warm-up", "x", {}, {}});
    tx.commit();
  }
  for (int i = 0; i < 300 && timing->confirmed() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::this_thread::sleep_for(std::chrono::seconds(2));

  fmt::print("\ncommit -> broker confirmation, {} writers committing single-row transactions, relay defaults:\n\n",
             a.clients);
  fmt::print("| writer rate (msg/s) | achieved | p50 ms | p90 ms | p99 ms | max ms | messages |\n"
             "|---:|---:|---:|---:|---:|---:|---:|\n");
  json points = json::array();
  for (int rate : a.rates) {
    timing->take_confirmations();
    std::mutex commits_mutex;
    std::unordered_map<std::string, Clock::time_point> committed_at;
    const auto start = Clock::now();
    const auto end = start + std::chrono::seconds(a.seconds);
    {
      std::vector<std::jthread> writers;
      for (int c = 0; c < a.clients; ++c)
        writers.emplace_back([&, c] {
          pqxx::connection conn(a.database_url);
          txbox::outbox::Outbox outbox;
          const auto interval = std::chrono::duration<double>(static_cast<double>(a.clients) / rate);
          for (long i = 0;; ++i) {
            const auto due = start + std::chrono::duration_cast<Clock::duration>(interval * (static_cast<double>(i) +
                                                                                             c / double(a.clients)));
            if (due >= end) break;
            std::this_thread::sleep_until(due);
            pqxx::work tx(conn);
            auto id = outbox.enqueue(tx, {topic, fmt::format("key-{}", (i * a.clients + c) % 1000), "x", {}, {}});
            tx.commit();
            const auto now = Clock::now();
            std::lock_guard lock(commits_mutex);
            committed_at.emplace(std::move(id), now);
          }
        });
    }
    const double achieved = static_cast<double>(committed_at.size()) / a.seconds;
    // Every committed message confirmed, or give up after 60 s.
    std::unordered_map<std::string, Clock::time_point> confirmed;
    const auto give_up = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < give_up) {
      for (auto& [id, t] : timing->take_confirmations()) confirmed.emplace(id, t);
      size_t have = 0;
      for (const auto& [id, t] : committed_at) have += confirmed.contains(id);
      if (have == committed_at.size()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::vector<double> ms;
    ms.reserve(committed_at.size());
    size_t missing = 0;
    for (const auto& [id, t] : committed_at) {
      auto it = confirmed.find(id);
      if (it == confirmed.end()) {
        ++missing;
        continue;
      }
      ms.push_back(std::chrono::duration<double, std::milli>(it->second - t).count());
    }
    std::sort(ms.begin(), ms.end());
    const json point{{"rate", rate},
                     {"achieved", achieved},
                     {"p50_ms", percentile(ms, 0.50)},
                     {"p90_ms", percentile(ms, 0.90)},
                     {"p99_ms", percentile(ms, 0.99)},
                     {"max_ms", ms.empty() ? 0.0 : ms.back()},
                     {"messages", ms.size()},
                     {"unconfirmed", missing}};
    points.push_back(point);
    fmt::print("| {} | {:.0f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {}{} |\n", rate, achieved,
               point["p50_ms"].get<double>(), point["p90_ms"].get<double>(), point["p99_ms"].get<double>(),
               point["max_ms"].get<double>(), ms.size(), missing ? fmt::format(" ({} unconfirmed)", missing) : "");
    std::fflush(stdout);
  }
  stop.request_stop();
  relay_thread.join();
  append_json(a.json_path, {{"kind", "latency"}, {"broker", scheme_of(a.broker_url)}, {"clients", a.clients},
                            {"seconds", a.seconds}, {"points", points}});
  reset_outbox(a.database_url);
  return 0;
}

// Turns the JSON lines of a run into the tables of the README and the data
// files of the charts (bench/charts.gp): the relay's in summary.md, the
// consumer's in consumer.md (only those with consumer_only).
int report(const std::string& json_path, const std::string& out_dir, bool consumer_only) {
  std::ifstream in(json_path);
  if (!in) {
    fmt::print(stderr, "txbox-bench: error: cannot read {}\n", json_path);
    return 1;
  }
  std::vector<json> records;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) records.push_back(json::parse(line));
  {
    std::ofstream consumer_md(out_dir + "/consumer.md");
    report_consumer(records, consumer_md, out_dir);
  }
  if (consumer_only) {
    fmt::print("wrote {0}/consumer.md, {0}/consumer.dat\n", out_dir);
    return 0;
  }
  std::ofstream md(out_dir + "/summary.md");
  std::ofstream latency_dat(out_dir + "/latency.dat");
  std::ofstream throughput_dat(out_dir + "/throughput.dat");
  latency_dat << "# rate p50_ms p90_ms p99_ms max_ms\n";
  throughput_dat << "# label relay_msgs reference_msgs\n";
  double baseline = 0;  // the Kafka run the variants are compared with
  for (const auto& r : records)
    if (r["kind"] == "throughput" && r["label"].get<std::string>().find("baseline") != std::string::npos)
      for (const auto& b : r["brokers"])
        if (b["broker"] == "kafka") baseline = b["relay"].get<double>();
  bool variants_header = false;
  for (const auto& r : records) {
    const std::string kind = r["kind"];
    if (kind == "throughput" && r.value("raw_sql", 0.0) == 0) {
      // A variant of the Kafka run, beside the group's baseline.
      if (!variants_header) {
        md << fmt::format("\n### Throughput to Kafka: variants ({} workers, batch {}, 200 B payloads, best of the "
                          "group's runs)\n\n",
                          r["workers"].get<int>(), r["batch_size"].get<int>());
        md << "| run | messages | messages/s | beside the 1,000-key run |\n|---|---:|---:|---:|\n";
        variants_header = true;
      }
      for (const auto& b : r["brokers"]) {
        const double rate = b["relay"].get<double>();
        md << fmt::format("| {} | {} | {:.0f} | {} |\n", r["label"].get<std::string>(), r["messages"].get<int>(),
                          rate, baseline > 0 ? fmt::format("{:.2f}", rate / baseline) : std::string("-"));
      }
      continue;
    }
    if (kind == "throughput") {
      const std::string label = r["label"];
      md << fmt::format("\n### Throughput ({} messages of {} B over {} keys, {} workers, batch {}, best of {} runs "
                        "of each)\n\n",
                        r["messages"].get<int>(), r["payload_bytes"].get<int>(), r["keys"].get<int>(),
                        r["workers"].get<int>(), r["batch_size"].get<int>(), r.value("repeat", 1));
      md << "| run | messages/s | reference (same run) | ratio |\n|---|---:|---|---:|\n";
      const double raw = r.value("raw_sql", 0.0);
      md << fmt::format("| raw SQL claim-and-delete, no broker (best of: {}) | {:.0f} | | |\n",
                        r["raw_sql_shape"].get<std::string>(), raw);
      md << fmt::format("| relay, instantly-confirming null broker | {:.0f} | raw SQL | {:.2f} |\n",
                        r["relay_null"].get<double>(), r["relay_null"].get<double>() / raw);
      throughput_dat << fmt::format("\"null\" {:.0f} {:.0f}\n", r["relay_null"].get<double>(), raw);
      for (const auto& b : r["brokers"]) {
        const std::string broker = b["broker"];
        const double rate = b["relay"].get<double>();
        const double ceiling = b.value("ceiling", 0.0);
        const std::string bound =
            b.contains("shared_cpu_bound") ? fmt::format("; sharing these cores, the two allow at most {:.0f}",
                                                         b["shared_cpu_bound"].get<double>())
                                           : std::string();
        if (broker == "amqp" || broker == "nats") {
          md << fmt::format("| relay -> {} | {:.0f} | the adapter alone, no database: {:.0f}{} | {:.2f} |\n", broker,
                            rate, ceiling, bound, rate / ceiling);
          throughput_dat << fmt::format("\"{}\" {:.0f} {:.0f}\n", broker, rate, ceiling);
        } else {
          md << fmt::format("| relay -> {} | {:.0f} | raw SQL (the adapter alone: {:.0f}{}) | {:.2f} |\n", broker,
                            rate, ceiling, bound, rate / raw);
          throughput_dat << fmt::format("\"{}\" {:.0f} {:.0f}\n", broker, rate, raw);
        }
      }
    } else if (kind == "latency") {
      md << fmt::format("\n### Latency: commit -> {} confirmation ({} writers, single-row transactions, relay "
                        "defaults)\n\n",
                        r["broker"].get<std::string>(), r["clients"].get<int>());
      md << "| writer rate (msg/s) | achieved | p50 ms | p90 ms | p99 ms | max ms | messages |\n"
            "|---:|---:|---:|---:|---:|---:|---:|\n";
      for (const auto& p : r["points"]) {
        md << fmt::format("| {} | {:.0f} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {} |\n", p["rate"].get<int>(),
                          p["achieved"].get<double>(), p["p50_ms"].get<double>(), p["p90_ms"].get<double>(),
                          p["p99_ms"].get<double>(), p["max_ms"].get<double>(), p["messages"].get<int>());
        latency_dat << fmt::format("{} {:.2f} {:.2f} {:.2f} {:.2f}\n", p["rate"].get<int>(), p["p50_ms"].get<double>(),
                                   p["p90_ms"].get<double>(), p["p99_ms"].get<double>(), p["max_ms"].get<double>());
      }
    } else if (kind == "note") {
      md << "\n" << r["markdown"].get<std::string>() << "\n";
    }
  }
  fmt::print("wrote {0}/summary.md, {0}/consumer.md, {0}/latency.dat, {0}/throughput.dat, {0}/consumer.dat\n", out_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"txbox benchmarks: relay throughput beside the raw SQL limit and broker ceilings, latency, and "
               "the consumer beside the brokers' consume ceilings"};
  app.require_subcommand(1);
  ThroughputArgs t;
  auto* tp = app.add_subcommand("throughput", "fill the outbox and drain it with the relay, per broker");
  tp->add_option("--database-url", t.database_url, "database to use (its txbox.outbox is truncated!)")->required();
  tp->add_option("--broker-url", t.broker_urls, "broker(s) for the real runs (repeatable)");
  tp->add_option("--topic", t.topic, "destination (topic, queue, subject, stream); default bench-<time>");
  tp->add_option("--label", t.label, "name of this run in the results");
  tp->add_option("--messages", t.messages, "messages per run (default 200000)");
  tp->add_option("--keys", t.keys, "distinct message keys (default 1000)");
  tp->add_option("--payload-bytes", t.payload, "payload size (default 200)");
  tp->add_option("--workers", t.workers, "relay workers / SQL connections (default 4)");
  tp->add_option("--batch-size", t.batch_size, "rows per batch (default 500)");
  tp->add_option("--repeat", t.repeat, "runs of each kind; the best is reported (default 1)");
  tp->add_flag("--skip-reference", t.skip_reference, "no raw SQL and null-broker runs");
  tp->add_option("--broker-property", t.properties, "NAME=VALUE passed to the broker client (repeatable)");
  tp->add_option("--json", t.json_path, "append the results as one JSON line to this file");
  LatencyArgs l;
  auto* lp = app.add_subcommand("latency", "writers at fixed rates; commit -> broker confirmation per message");
  lp->add_option("--database-url", l.database_url, "database to use (its txbox.outbox is truncated!)")->required();
  lp->add_option("--broker-url", l.broker_url, "broker, e.g. kafka://127.0.0.1:9092")->required();
  lp->add_option("--rates", l.rates, "writer rates in messages/s (default 100 1000 5000)")->delimiter(',');
  lp->add_option("--clients", l.clients, "writer connections (default 4)");
  lp->add_option("--seconds", l.seconds, "seconds per rate (default 20)");
  lp->add_option("--json", l.json_path, "append the results as one JSON line to this file");
  ConsumerArgs c;
  auto* cp = add_consumer_command(app, c);
  std::string report_json, report_dir;
  bool report_consumer_only = false;
  auto* rp = app.add_subcommand("report", "tables (Markdown) and chart data from the JSON lines of a run");
  rp->add_option("--json", report_json, "the JSON lines file")->required();
  rp->add_option("--out", report_dir, "directory for summary.md, consumer.md and the charts' .dat files")->required();
  rp->add_flag("--consumer-only", report_consumer_only, "only consumer.md and consumer.dat");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (rp->parsed()) return report(report_json, report_dir, report_consumer_only);
  try {
    const std::string& url = tp->parsed() ? t.database_url : cp->parsed() ? c.database_url : l.database_url;
    {
      pqxx::connection conn(url);
      txbox::outbox::migrate(conn);
    }
    if (tp->parsed()) return throughput(t);
    if (cp->parsed()) return consumer_bench(c);
    return latency(l);
  } catch (const std::exception& e) {
    fmt::print(stderr, "txbox-bench: error: {}\n", e.what());
    return 1;
  }
}
