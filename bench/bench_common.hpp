#pragma once
// What the subcommands of txbox-bench share: timing, the JSON lines file,
// percentiles, and publishing prepared messages as fast as the adapter goes.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "txbox/brokers/broker.hpp"

namespace txbox::bench {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Appends one record as one line; nothing when no file was asked for.
inline void append_json(const std::string& path, const json& record) {
  if (path.empty()) return;
  std::ofstream out(path, std::ios::app);
  out << record.dump() << '\n';
}

inline std::string scheme_of(const std::string& url) { return url.substr(0, url.find(':')); }

// `sorted` ascending; p in [0, 1].
inline double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())));
  return sorted[i];
}

// Publishes every message with the adapter alone, from `connections` threads
// that each keep `in_flight` batches of `batch_size` in flight (as the
// relay's workers do); returns how many the broker confirmed.
inline long publish_all(brokers::Publisher& publisher, std::span<const brokers::Message> all, int connections,
                        int batch_size, int in_flight) {
  std::atomic<size_t> next{0};
  std::atomic<long> confirmed{0};
  std::vector<std::jthread> threads;
  for (int c = 0; c < connections; ++c)
    threads.emplace_back([&] {
      std::deque<std::unique_ptr<brokers::PendingPublish>> pending;
      for (;;) {
        const size_t from = next.fetch_add(static_cast<size_t>(batch_size));
        if (from < all.size()) {
          const size_t n = std::min(static_cast<size_t>(batch_size), all.size() - from);
          pending.push_back(publisher.start(all.subspan(from, n)));
        }
        if (pending.empty()) break;
        if (from < all.size() && static_cast<int>(pending.size()) < in_flight) continue;
        for (const auto& r : pending.front()->wait(Clock::now() + std::chrono::seconds(60)))
          confirmed += r.confirmed;
        pending.pop_front();
      }
    });
  threads.clear();  // joins
  return confirmed.load();
}

}  // namespace txbox::bench
