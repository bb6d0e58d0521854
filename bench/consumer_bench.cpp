// txbox-bench consumer: what the consumer side costs per broker, beside the
// broker's own consume ceiling measured in the same run (this machine is
// shared and noisy: only ratios travel).
//
// Every run reads a destination of its own (topic, queue, subject, stream,
// consumer group), filled beforehand with N order events over K keys by the
// adapter's Publisher (not the relay), so every run reads all N messages:
//   ceiling   the adapter alone: poll, ack_batch every 100, no database
//   no-op     InboxConsumer with a handler that does nothing: the inbox's cost
//   upsert    InboxConsumer with the example's handler (examples/order_totals.hpp)
// the inbox runs once per --workers value. Rates count from the first
// delivery to the last ack (not the subscription's start-up). Then latency:
// a publisher sends --latency-rate messages/s stamped with their send time
// while the upsert consumer runs; per message, delivery (poll returned it) to
// commit (the ack that follows the commit), and publish to commit.
#include "consumer_bench.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <unordered_map>

#include "order_totals.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/outbox/outbox.hpp"
#include "txbox/registry/registry.hpp"

namespace txbox::bench {

namespace {

using brokers::Delivery;
using brokers::Message;
using std::chrono::milliseconds;

// Steady-clock nanoseconds at the publisher's start(): publisher and
// consumer share this process, hence the clock.
constexpr std::string_view kSentAtHeader = "bench-sent-at-ns";
// The ceiling acks in the bulk form, as many at a time as the inbox
// consumer's default max_batch.
constexpr size_t kCeilingAckBatch = 100;
// A run that makes no progress for this long is reported as it stands.
constexpr auto kStallLimit = std::chrono::seconds(60);

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Wraps a broker consumer and records when messages are delivered and
// acked. The inbox consumer acks right after its commit, so the start of
// the ack call is the commit's moment. The bookkeeping is locked: lanes
// may ack from threads of their own.
class TimedConsumer final : public brokers::Consumer {
 public:
  struct Sample {
    double delivery_to_commit_ms;
    double publish_to_commit_ms;  // NaN without a send stamp
  };

  TimedConsumer(std::unique_ptr<brokers::Consumer> inner, bool per_message)
      : inner_(std::move(inner)), per_message_(per_message) {}

  std::optional<Delivery> poll(milliseconds timeout) override {
    auto delivery = inner_->poll(timeout);
    if (delivery) {
      const auto now = Clock::now();
      std::lock_guard lock(mutex_);
      if (!first_delivery_) first_delivery_ = now;
      if (per_message_) delivered_at_.emplace(delivery->message.message_id, now);
    }
    return delivery;
  }
  void ack(const Delivery& delivery) override {
    const auto committed = Clock::now();
    inner_->ack(delivery);
    record(std::span(&delivery, 1), committed);
  }
  void ack_batch(std::span<const Delivery> deliveries) override {
    const auto committed = Clock::now();
    inner_->ack_batch(deliveries);
    record(deliveries, committed);
  }
  bool dead_letter(const Delivery& delivery, const std::string& reason) override {
    return inner_->dead_letter(delivery, reason);
  }
  void close() override { inner_->close(); }

  uint64_t acked() const {
    std::lock_guard lock(mutex_);
    return acked_;
  }
  // Messages acked per second from the first delivery to the last ack.
  double rate() const {
    std::lock_guard lock(mutex_);
    if (!first_delivery_ || !last_ack_ || *last_ack_ <= *first_delivery_) return 0;
    return static_cast<double>(acked_) / std::chrono::duration<double>(*last_ack_ - *first_delivery_).count();
  }
  std::vector<Sample> take_samples() {
    std::lock_guard lock(mutex_);
    return std::exchange(samples_, {});
  }

 private:
  void record(std::span<const Delivery> deliveries, Clock::time_point committed) {
    const auto now = Clock::now();
    std::lock_guard lock(mutex_);
    acked_ += deliveries.size();
    last_ack_ = now;
    if (!per_message_) return;
    for (const auto& d : deliveries) {
      auto delivered = delivered_at_.find(d.message.message_id);
      if (delivered == delivered_at_.end()) continue;
      double publish_ms = std::nan("");
      for (const auto& [name, value] : d.message.headers)
        if (name == kSentAtHeader)
          publish_ms = ms_between(Clock::time_point(Clock::duration(std::stoll(value))), committed);
      samples_.push_back({ms_between(delivered->second, committed), publish_ms});
      delivered_at_.erase(delivered);
    }
  }

  std::unique_ptr<brokers::Consumer> inner_;
  const bool per_message_;
  mutable std::mutex mutex_;
  std::optional<Clock::time_point> first_delivery_, last_ack_;
  uint64_t acked_ = 0;
  std::unordered_map<std::string, Clock::time_point> delivered_at_;
  std::vector<Sample> samples_;
};

// The inbox consumer's own limit: a broker that hands out prepared
// deliveries at once and takes acks for free, so that only the database work
// counts (what the relay bench's null broker is to the relay).
class InMemoryConsumer final : public brokers::Consumer {
 public:
  explicit InMemoryConsumer(std::vector<Message> messages) : messages_(std::move(messages)) {}

  std::optional<Delivery> poll(milliseconds) override {
    std::lock_guard lock(mutex_);
    if (next_ == messages_.size()) return std::nullopt;
    Delivery delivery;
    delivery.message = std::move(messages_[next_]);
    delivery.source = delivery.message.destination;
    delivery.offset = static_cast<int64_t>(next_);
    delivery.ack_token = std::to_string(next_++);
    return delivery;
  }
  void ack(const Delivery&) override {}
  void close() override {}

 private:
  std::mutex mutex_;
  std::vector<Message> messages_;
  size_t next_ = 0;
};

enum class Handler { none, no_op, upsert };

const char* name_of(Handler handler) {
  switch (handler) {
    case Handler::none: return "ceiling";
    case Handler::no_op: return "no-op";
    case Handler::upsert: return "upsert";
  }
  return "?";
}

// Order events like the example's: {"customer": "customer-7", "amount_cents": 1234},
// keyed by customer.
std::vector<Message> order_events(const std::string& destination, int messages, int keys) {
  std::vector<Message> events;
  events.reserve(static_cast<size_t>(messages));
  for (int i = 0; i < messages; ++i) {
    std::string customer = fmt::format("customer-{}", i % keys);
    std::string payload = fmt::format(R"({{"customer": "{}", "amount_cents": {}}})", customer, 100 + i % 9900);
    events.push_back({outbox::new_message_id(), destination, std::move(customer), std::move(payload),
                      {{"content-type", "application/json"}}});
  }
  return events;
}

// A destination of its own for one run: the topic, queue, subject or stream,
// and the consumer group (and inbox consumer) of the same name.
brokers::Subscription subscription_of(const ConsumerArgs& a, const std::string& broker_url,
                                      const std::string& destination) {
  brokers::Subscription subscription{destination, destination};
  if (scheme_of(broker_url) == "kafka")
    for (const auto& p : a.kafka_properties)
      if (auto eq = p.find('='); eq != std::string::npos) subscription.properties[p.substr(0, eq)] = p.substr(eq + 1);
  return subscription;
}

// RabbitMQ drops what is published to the default exchange for a queue that
// does not exist yet: the consumer declares it (with its dead-letter
// arguments), so one is opened and closed before the fill. The other
// brokers create the destination on the first publish.
void declare_destination(const ConsumerArgs& a, const std::string& broker_url, const std::string& destination) {
  if (scheme_of(broker_url) == "amqp")
    brokers::open_consumer(broker_url, subscription_of(a, broker_url, destination))->close();
}

void fill(const ConsumerArgs& a, const std::string& broker_url, brokers::Publisher& publisher,
          const std::string& destination) {
  declare_destination(a, broker_url, destination);
  const int messages = a.messages;
  const auto events = order_events(destination, messages, a.keys);
  const long confirmed = publish_all(publisher, events, 4, 500, 4);
  if (confirmed != messages)
    throw std::runtime_error(fmt::format("filling {}: the broker confirmed {} of {} messages", destination, confirmed,
                                         messages));
}

void reset_consumer_tables(const std::string& database_url) {
  pqxx::connection conn(database_url);
  pqxx::nontransaction tx(conn);
  tx.exec0(example::kCustomerTotalsTable);
  tx.exec0("TRUNCATE txbox.inbox, customer_totals");
}

// Until `timed` has acked `messages` or made no progress for kStallLimit.
class Progress {
 public:
  Progress(const TimedConsumer& timed, uint64_t messages) : timed_(timed), messages_(messages) {}
  bool finished() {
    const uint64_t acked = timed_.acked();
    if (acked >= messages_) return true;
    if (acked != last_) {
      last_ = acked;
      since_ = Clock::now();
    }
    if (Clock::now() - since_ < kStallLimit) return false;
    spdlog::warn("no progress for {} s: stopping at {} of {} messages",
                 std::chrono::duration_cast<std::chrono::seconds>(kStallLimit).count(), acked, messages_);
    return true;
  }

 private:
  const TimedConsumer& timed_;
  const uint64_t messages_;
  uint64_t last_ = 0;
  Clock::time_point since_ = Clock::now();
};

// The adapter alone: poll as the inbox consumer does (wait for the first of
// a batch, then take only what is ready), ack_batch every 100.
void drain_adapter_alone(TimedConsumer& timed, uint64_t messages) {
  Progress progress(timed, messages);
  std::vector<Delivery> batch;
  uint64_t received = 0;
  while (!progress.finished()) {
    auto delivery = received < messages ? timed.poll(batch.empty() ? milliseconds(200) : milliseconds(0))
                                        : std::nullopt;
    if (delivery) {
      batch.push_back(std::move(*delivery));
      ++received;
      if (batch.size() < kCeilingAckBatch) continue;
    }
    if (!batch.empty()) timed.ack_batch(batch);
    batch.clear();
  }
}

consumer::MessageHandler handler_of(Handler handler) {
  if (handler == Handler::upsert) return example::add_order_to_customer_totals;
  return [](pqxx::transaction_base&, const Delivery&) {};
}

// Reads a.messages from `consumer` (the adapter alone, or through the
// inbox with `handler`); returns messages/s.
double consume(const ConsumerArgs& a, std::unique_ptr<brokers::Consumer> consumer, const std::string& destination,
               Handler handler, const consumer::InboxConsumerOptions& options) {
  reset_consumer_tables(a.database_url);
  TimedConsumer timed(std::move(consumer), false);
  const auto expected = static_cast<uint64_t>(a.messages);
  if (handler == Handler::none) {
    drain_adapter_alone(timed, expected);
  } else {
    consumer::InboxConsumer inbox_consumer(timed, a.database_url, inbox::Inbox(destination), handler_of(handler),
                                           options);
    Progress progress(timed, expected);
    inbox_consumer.run({}, [&](const consumer::ConsumeStats&) { return progress.finished(); });
  }
  timed.close();
  if (timed.acked() != expected) spdlog::warn("{}: acked {} of {} messages", destination, timed.acked(), expected);
  return timed.rate();
}

// One run on a destination of its own; returns messages/s. No broker_url:
// the in-memory broker.
double run_once(const ConsumerArgs& a, const std::optional<std::string>& broker_url, brokers::Publisher* publisher,
                const std::string& destination, Handler handler, int workers) {
  consumer::InboxConsumerOptions options;
  options.workers = workers;
  if (!broker_url)
    return consume(a, std::make_unique<InMemoryConsumer>(order_events(destination, a.messages, a.keys)), destination,
                   handler, options);
  fill(a, *broker_url, *publisher, destination);
  return consume(a, brokers::open_consumer(*broker_url, subscription_of(a, *broker_url, destination)), destination,
                 handler, options);
}

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
  json to_json() const { return {{"p50_ms", p50}, {"p90_ms", p90}, {"p99_ms", p99}, {"max_ms", max}}; }
};

Percentiles percentiles_of(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return {percentile(ms, 0.50), percentile(ms, 0.90), percentile(ms, 0.99), ms.empty() ? 0.0 : ms.back()};
}

// Hands messages to the publisher one by one and collects their
// confirmations on a thread of its own, so that sending keeps its rate.
class PacedPublisher {
 public:
  explicit PacedPublisher(brokers::Publisher& publisher) : publisher_(publisher) {
    confirming_ = std::jthread([this] { confirm(); });
  }
  ~PacedPublisher() { finish(); }

  // `message` must stay in place until finish() returned.
  void send(const Message& message) {
    auto pending = publisher_.start(std::span(&message, 1));
    std::lock_guard lock(mutex_);
    pending_.push_back(std::move(pending));
    ready_.notify_one();
  }
  // Waits for every confirmation; returns how many were confirmed.
  long finish() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
      ready_.notify_one();
    }
    if (confirming_.joinable()) confirming_.join();
    return confirmed_;
  }

 private:
  void confirm() {
    for (;;) {
      std::unique_ptr<brokers::PendingPublish> next;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return done_ || !pending_.empty(); });
        if (pending_.empty()) return;
        next = std::move(pending_.front());
        pending_.pop_front();
      }
      for (const auto& r : next->wait(Clock::now() + std::chrono::seconds(30))) confirmed_ += r.confirmed;
    }
  }

  brokers::Publisher& publisher_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::unique_ptr<brokers::PendingPublish>> pending_;
  bool done_ = false;
  long confirmed_ = 0;
  std::jthread confirming_;
};

json latency(const ConsumerArgs& a, const std::string& broker_url, brokers::Publisher& publisher,
             const std::string& destination) {
  declare_destination(a, broker_url, destination);
  reset_consumer_tables(a.database_url);
  // Warm-up: one message through, so that the subscription is in place
  // (Kafka: the group joined, partitions assigned) before anything counts.
  // Published first: NATS creates the stream on the first publish, and the
  // consumer needs the stream.
  auto warm_up = order_events(destination, 1, 1);
  publisher.publish(warm_up, std::chrono::seconds(30));
  TimedConsumer timed(brokers::open_consumer(broker_url, subscription_of(a, broker_url, destination)), true);
  consumer::InboxConsumer inbox_consumer(timed, a.database_url, inbox::Inbox(destination),
                                         example::add_order_to_customer_totals);  // the defaults
  std::jthread consuming([&](std::stop_token stop) { inbox_consumer.run(stop); });
  for (int i = 0; i < 600 && timed.acked() == 0; ++i) std::this_thread::sleep_for(milliseconds(100));
  if (timed.acked() == 0) throw std::runtime_error(fmt::format("{}: the warm-up message never arrived", destination));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  timed.take_samples();

  auto events = order_events(destination, a.latency_rate * a.latency_seconds, a.keys);
  const auto start = Clock::now();
  long confirmed = 0;
  {
    PacedPublisher paced(publisher);
    const auto interval = std::chrono::duration<double>(1.0 / a.latency_rate);
    for (size_t i = 0; i < events.size(); ++i) {
      std::this_thread::sleep_until(start +
                                    std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(i)));
      events[i].headers.emplace_back(kSentAtHeader, std::to_string(Clock::now().time_since_epoch().count()));
      paced.send(events[i]);
    }
    confirmed = paced.finish();
  }
  const double achieved = static_cast<double>(events.size()) / seconds_since(start);
  const uint64_t expected = 1 + static_cast<uint64_t>(confirmed);
  for (int i = 0; i < 300 && timed.acked() < expected; ++i) std::this_thread::sleep_for(milliseconds(100));
  consuming.request_stop();
  consuming.join();
  timed.close();

  std::vector<double> delivery_ms, publish_ms;
  for (const auto& s : timed.take_samples()) {
    delivery_ms.push_back(s.delivery_to_commit_ms);
    if (!std::isnan(s.publish_to_commit_ms)) publish_ms.push_back(s.publish_to_commit_ms);
  }
  return {{"rate", a.latency_rate},
          {"seconds", a.latency_seconds},
          {"achieved", achieved},
          {"messages", delivery_ms.size()},
          {"unconfirmed", static_cast<long>(events.size()) - confirmed},
          {"not_committed", static_cast<long>(expected) - static_cast<long>(timed.acked())},
          {"delivery_to_commit", percentiles_of(delivery_ms).to_json()},
          {"publish_to_commit", percentiles_of(publish_ms).to_json()}};
}

std::string run_name(Handler handler, int workers) {
  if (handler == Handler::none) return "the adapter alone (the ceiling): poll, ack_batch of 100, no database";
  return fmt::format("InboxConsumer, {} handler, {} lane{}", handler == Handler::upsert ? "the example's upsert" : "a no-op",
                     workers, workers == 1 ? "" : "s");
}

// The issue's targets, where one applies: (met, what it asks).
std::optional<std::pair<bool, std::string>> target_of(const std::string& broker, const std::string& mode, double rate,
                                                      double ceiling) {
  if (mode == "no-op" && (broker == "kafka" || broker == "redis")) return std::pair{rate >= 20000, ">= 20,000 msg/s"};
  if (mode == "no-op" && ceiling > 0) return std::pair{rate >= 0.8 * ceiling, ">= 0.8 x the ceiling"};
  if (mode == "upsert" && broker == "kafka") return std::pair{rate >= 10000, ">= 10,000 msg/s"};
  return std::nullopt;
}

}  // namespace

CLI::App* add_consumer_command(CLI::App& app, ConsumerArgs& a) {
  auto* cp = app.add_subcommand("consumer", "per broker: the adapter's consume ceiling, the inbox consumer "
                                            "(no-op and upsert handlers), latency at a fixed rate");
  cp->add_option("--database-url", a.database_url, "database to use (its txbox.inbox is truncated!)")->required();
  cp->add_option("--broker-url", a.broker_urls, "broker(s) to measure (repeatable)")->required();
  cp->add_option("--messages", a.messages, "messages per run (default 200000; 0 = only the latency run)");
  cp->add_option("--keys", a.keys, "distinct message keys (customers; default 1000)");
  cp->add_option("--workers", a.workers, "InboxConsumerOptions::workers of the inbox runs (default 1,4)")
      ->delimiter(',');
  cp->add_option("--workers-for", a.workers_for,
                 "SCHEME=N[:N...]: other --workers for one broker (kafka, amqp, nats, redis, in-memory; repeatable)");
  cp->add_option("--messages-for", a.messages_for, "SCHEME=N: other --messages for one broker (repeatable)");
  cp->add_option("--repeat", a.repeat, "runs of each kind; the best is reported (default 1)");
  cp->add_option("--latency-rate", a.latency_rate, "messages/s of the latency run (default 1000; 0 = none)");
  cp->add_option("--latency-seconds", a.latency_seconds, "seconds of the latency run (default 20)");
  cp->add_option("--kafka-property", a.kafka_properties, "NAME=VALUE for the Kafka consumers (repeatable)");
  cp->add_option("--json", a.json_path, "append the results as JSON lines to this file");
  return cp;
}

namespace {

// The value for `broker` in SCHEME=VALUE entries (--workers-for, --messages-for).
std::optional<std::string> value_for(const std::vector<std::string>& entries, const std::string& broker) {
  for (const auto& entry : entries)
    if (const auto eq = entry.find('='); eq != std::string::npos && entry.substr(0, eq) == broker)
      return entry.substr(eq + 1);
  return std::nullopt;
}

// The workers values to measure on `broker`: --workers, or its --workers-for.
std::vector<int> workers_of(const ConsumerArgs& a, const std::string& broker) {
  const auto list = value_for(a.workers_for, broker);
  if (!list) return a.workers;
  std::vector<int> workers;
  for (size_t from = 0; from < list->size();) {
    const size_t colon = std::min(list->find(':', from), list->size());
    workers.push_back(std::stoi(list->substr(from, colon - from)));
    from = colon + 1;
  }
  return workers;
}

// Messages/s of the in-memory runs by (handler, workers): the inbox alone.
using InboxAlone = std::map<std::pair<std::string, int>, double>;

// With the database and the broker sharing the same cores, their costs per
// message add up: the consumer cannot beat 1 / (1/ceiling + 1/inbox alone).
double shared_cpu_bound(double ceiling, double inbox_alone) {
  return ceiling > 0 && inbox_alone > 0 ? 1.0 / (1.0 / ceiling + 1.0 / inbox_alone) : 0.0;
}

// On a broker: the ceiling, then the inbox consumer's runs, each on a
// destination of its own. Without one (nullopt): the inbox consumer on the
// in-memory broker. Prints and records each; returns the rates.
InboxAlone throughput_runs(const ConsumerArgs& a, const std::optional<std::string>& url, brokers::Publisher* publisher,
                           const std::string& run_id, const InboxAlone& inbox_alone) {
  const std::string broker = url ? scheme_of(*url) : "in-memory";
  int run_number = 0;
  auto best_of = [&](Handler handler, int workers) {
    double best = 0;
    for (int r = 0; r < a.repeat; ++r) {
      const std::string destination = fmt::format("{}-{}-{}", run_id, broker, ++run_number);
      best = std::max(best, run_once(a, url, publisher, destination, handler, workers));
    }
    return best;
  };
  const double ceiling = url ? best_of(Handler::none, 1) : 0.0;
  InboxAlone rates;
  auto record = [&](Handler handler, int workers, double rate) {
    const std::string mode = name_of(handler);
    rates[{mode, workers}] = rate;
    json row{{"kind", "consumer"}, {"broker", broker}, {"mode", mode},   {"workers", workers},
             {"messages", a.messages}, {"keys", a.keys}, {"repeat", a.repeat}, {"rate", rate}};
    std::string beside, bound;
    if (url) {
      row["ceiling"] = ceiling;
      beside = fmt::format("{:.2f}", rate / ceiling);
    }
    if (auto alone = inbox_alone.find({mode, workers}); url && alone != inbox_alone.end()) {
      row["inbox_alone"] = alone->second;
      row["shared_cpu_bound"] = shared_cpu_bound(ceiling, alone->second);
      bound = fmt::format("{:.0f}", row["shared_cpu_bound"].get<double>());
    }
    append_json(a.json_path, row);
    const auto target = target_of(broker, mode, rate, ceiling);
    fmt::print("| {} | {} | {:.0f} | {} | {} | {} |\n", broker, run_name(handler, workers), rate, beside, bound,
               target ? fmt::format("{} {}", target->second, target->first ? "met" : "MISSED") : "");
    std::fflush(stdout);
  };
  if (url) record(Handler::none, 1, ceiling);
  for (int workers : workers_of(a, broker))
    for (Handler handler : {Handler::no_op, Handler::upsert}) {
      record(handler, workers, best_of(handler, workers));
    }
  return rates;
}

}  // namespace

int consumer_bench(const ConsumerArgs& a) {
  const std::string run_id =
      fmt::format("cbench-{}", std::chrono::system_clock::now().time_since_epoch().count());
  InboxAlone inbox_alone;
  if (a.messages > 0) {
    fmt::print("\n{} order events over {} keys per run, best of {}:\n\n"
               "| broker | run | messages/s | beside the ceiling | the ceiling and the inbox alone, added | target |\n"
               "|---|---|---:|---:|---:|---|\n",
               a.messages, a.keys, a.repeat);
    inbox_alone = throughput_runs(a, std::nullopt, nullptr, run_id, {});
  }
  std::vector<json> latencies;
  for (const auto& url : a.broker_urls) {
    std::shared_ptr<brokers::Publisher> publisher = brokers::open_publisher(url, {});
    ConsumerArgs for_broker = a;
    if (const auto messages = value_for(a.messages_for, scheme_of(url))) for_broker.messages = std::stoi(*messages);
    if (a.messages > 0) throughput_runs(for_broker, url, publisher.get(), run_id, inbox_alone);
    if (a.latency_rate > 0) {
      json point = latency(a, url, *publisher, run_id + "-latency");
      point["kind"] = "consumer_latency";
      point["broker"] = scheme_of(url);
      append_json(a.json_path, point);
      latencies.push_back(point);
    }
  }
  if (!latencies.empty()) {
    fmt::print("\nlatency, the upsert consumer with its defaults, a publisher at a fixed rate:\n\n"
               "| broker | rate | delivery -> commit p50 / p99 ms | publish -> commit p50 / p99 ms | messages |\n"
               "|---|---:|---:|---:|---:|\n");
    for (const auto& p : latencies)
      fmt::print("| {} | {} | {:.1f} / {:.1f} | {:.1f} / {:.1f} | {} |\n", p["broker"].get<std::string>(),
                 p["rate"].get<int>(), p["delivery_to_commit"]["p50_ms"].get<double>(),
                 p["delivery_to_commit"]["p99_ms"].get<double>(), p["publish_to_commit"]["p50_ms"].get<double>(),
                 p["publish_to_commit"]["p99_ms"].get<double>(), p["messages"].get<long>());
  }
  return 0;
}

void report_consumer(const std::vector<json>& records, std::ostream& md, const std::string& out_dir) {
  // Per broker, in the order of the run: the rates by run, and the ceiling.
  std::vector<std::string> brokers;
  std::map<std::string, std::vector<json>> runs;
  std::vector<json> latencies;
  for (const auto& r : records) {
    if (r["kind"] == "consumer_latency") latencies.push_back(r);
    if (r["kind"] != "consumer") continue;
    const std::string broker = r["broker"];
    if (!runs.contains(broker)) brokers.push_back(broker);
    runs[broker].push_back(r);
  }
  if (brokers.empty()) return;
  const json& first = runs[brokers.front()].front();
  md << fmt::format("### Consumer throughput (order events over {} keys, each run on a destination of its own, "
                    "best of {})\n\n",
                    first["keys"].get<int>(), first.value("repeat", 1));
  md << "| broker | run | messages | messages/s | beside the ceiling | bound: the ceiling and the inbox alone, "
        "their costs added | target |\n|---|---|---:|---:|---:|---:|---|\n";
  // The chart: per broker the ceiling, then no-op and upsert with 1 lane and
  // with the most lanes measured ("?" = not measured).
  int most_lanes = 1;
  for (const auto& b : brokers)
    for (const auto& r : runs[b]) most_lanes = std::max(most_lanes, r["workers"].get<int>());
  std::ofstream dat(out_dir + "/consumer.dat");
  // The first line names the columns (gnuplot: set key autotitle columnheader).
  dat << fmt::format("broker \"the adapter alone (ceiling)\" \"no-op handler, 1 lane\" \"upsert handler, 1 lane\" "
                     "\"no-op, {0} lanes\" \"upsert, {0} lanes\"\n",
                     most_lanes);
  for (const auto& b : brokers) {
    std::map<std::pair<std::string, int>, double> rate_of;
    for (const auto& r : runs[b]) {
      const std::string mode = r["mode"];
      const double rate = r["rate"].get<double>(), ceiling = r.value("ceiling", 0.0);
      const int workers = r["workers"].get<int>();
      rate_of[{mode, workers}] = rate;
      const auto target = target_of(b, mode, rate, ceiling);
      const Handler handler = mode == "ceiling" ? Handler::none : mode == "no-op" ? Handler::no_op : Handler::upsert;
      md << fmt::format("| {} | {} | {} | {:.0f} | {} | {} | {} |\n", b == "in-memory" ? "in-memory broker" : b,
                        run_name(handler, workers), r["messages"].get<int>(), rate, ceiling > 0 ? fmt::format("{:.2f}", rate / ceiling) : "",
                        r.contains("shared_cpu_bound") ? fmt::format("{:.0f}", r["shared_cpu_bound"].get<double>())
                                                       : "",
                        target ? fmt::format("{}: {}", target->second, target->first ? "met" : "**missed**") : "");
    }
    auto column = [&](const std::string& mode, int workers) {
      auto it = rate_of.find({mode, workers});
      return it == rate_of.end() ? std::string("?") : fmt::format("{:.0f}", it->second);
    };
    dat << fmt::format("\"{}\" {} {} {} {} {}\n", b, column("ceiling", 1), column("no-op", 1), column("upsert", 1),
                       most_lanes > 1 ? column("no-op", most_lanes) : "?",
                       most_lanes > 1 ? column("upsert", most_lanes) : "?");
  }
  if (latencies.empty()) return;
  md << fmt::format("\n### Consumer latency (a publisher at {} msg/s for {} s, the upsert consumer with its defaults: "
                    "max_batch 100, max_batch_wait 0, 1 lane)\n\n",
                    latencies.front()["rate"].get<int>(), latencies.front()["seconds"].get<int>());
  md << "| broker | achieved msg/s | delivery -> commit p50 | p90 | p99 | max | publish -> commit p50 | p99 | "
        "messages | target: delivery -> commit p99 <= 20 ms |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const auto& p : latencies) {
    const auto& d = p["delivery_to_commit"];
    const auto& s = p["publish_to_commit"];
    const double p99 = d["p99_ms"].get<double>();
    md << fmt::format("| {} | {:.0f} | {:.1f} ms | {:.1f} | {:.1f} | {:.1f} | {:.1f} ms | {:.1f} | {} | {} |\n",
                      p["broker"].get<std::string>(), p["achieved"].get<double>(), d["p50_ms"].get<double>(),
                      d["p90_ms"].get<double>(), p99, d["max_ms"].get<double>(), s["p50_ms"].get<double>(),
                      s["p99_ms"].get<double>(), p["messages"].get<long>(), p99 <= 20 ? "met" : "**missed**");
  }
}

}  // namespace txbox::bench
