#pragma once
// The relay's metrics (docs/operations.md lists them): one registry per
// relay, families registered once; workers keep their own cache of the
// per-destination counters, so counting stays lock-free after a
// destination's first message.

#include <string>
#include <unordered_map>

#include "txbox/metrics/metrics.hpp"

namespace txbox::relay {

struct RelayMetrics {
  metrics::Registry registry;
  metrics::Family<metrics::Counter>& published = registry.counter(
      "txbox_relay_messages_published_total", "Messages confirmed by the broker and deleted from the outbox.",
      {"destination"});
  metrics::Family<metrics::Counter>& failures = registry.counter(
      "txbox_relay_publish_failures_total",
      "Publish attempts that failed, by error class: transient (retried), permanent (dead-lettered), outage (the "
      "broker was down; not counted as an attempt).",
      {"destination", "error_class"});
  metrics::Family<metrics::Counter>& dead_letters = registry.counter(
      "txbox_relay_dead_letters_total", "Messages moved to the dead-letter table.", {"destination"});
  metrics::Histogram& batch_duration =
      registry
          .histogram("txbox_relay_batch_duration_seconds", "A batch from its claim to the commit of its completion.",
                     metrics::duration_buckets())
          .with({});
  metrics::Histogram& publish_duration =
      registry
          .histogram("txbox_relay_publish_duration_seconds",
                     "A batch from its hand-over to the broker until every confirmation (or the deadline).",
                     metrics::duration_buckets())
          .with({});
  metrics::Histogram& message_delay =
      registry
          .histogram("txbox_relay_message_delay_seconds",
                     "A message from its outbox row's created_at to its deletion after the broker's confirmation.",
                     metrics::duration_buckets())
          .with({});
  metrics::Gauge& broker_up =
      registry.gauge("txbox_relay_broker_up", "1 while the broker takes messages, 0 during an outage.").with({});
  metrics::Gauge& workers = registry.gauge("txbox_relay_workers", "Worker threads of this relay.").with({});
  metrics::Gauge& lanes_owned =
      registry.gauge("txbox_relay_lanes_owned", "Lanes (of 256) this relay's workers hold.").with({});

  RelayMetrics() {
    metrics::add_process_metrics(registry);
    broker_up.set(1);
  }
};

// A worker's own references to per-destination counters.
class DestinationCounters {
 public:
  explicit DestinationCounters(metrics::Family<metrics::Counter>& family) : family_(family) {}
  // `extra`: the second label's value, if the family has one.
  metrics::Counter& at(const std::string& destination, const std::string& extra = {}) {
    const std::string key = extra.empty() ? destination : destination + '\n' + extra;
    auto it = cache_.find(key);
    if (it != cache_.end()) return *it->second;
    metrics::LabelValues values{destination};
    if (!extra.empty()) values.push_back(extra);
    return *cache_.emplace(key, &family_.with(std::move(values))).first->second;
  }

 private:
  metrics::Family<metrics::Counter>& family_;
  std::unordered_map<std::string, metrics::Counter*> cache_;
};

}  // namespace txbox::relay
