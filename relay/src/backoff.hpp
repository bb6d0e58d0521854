#pragma once
// Exponential backoff with jitter, the one implementation used for retries
// of messages and for reconnects.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "txbox/relay/options.hpp"

namespace txbox::relay {

// Delay before attempt number `attempt` (1 = the first retry):
// min(cap, base * factor^(attempt-1)) * jitter, jitter in [0.5, 1].
inline std::chrono::milliseconds backoff_delay(const RetryOptions& retry, int attempt, double jitter) {
  double raw = static_cast<double>(retry.base.count()) * std::pow(retry.factor, std::max(0, attempt - 1));
  double capped = std::min(raw, static_cast<double>(retry.cap.count()));
  return std::chrono::milliseconds(static_cast<long long>(capped * std::clamp(jitter, 0.0, 1.0)));
}

// A jitter factor in [0.5, 1] (full jitter over the upper half).
class Jitter {
 public:
  Jitter() : random_(std::random_device{}()) {}
  double operator()() { return std::uniform_real_distribution<double>(0.5, 1.0)(random_); }

 private:
  std::mt19937 random_;
};

// Growing waits between attempts at something that fails as a whole
// (reconnecting, probing a broker that is down).
class Backoff {
 public:
  Backoff(std::chrono::milliseconds base, double factor, std::chrono::milliseconds cap)
      : retry_{.base = base, .factor = factor, .cap = cap} {}
  std::chrono::milliseconds next() { return backoff_delay(retry_, ++attempt_, jitter_()); }
  void reset() { attempt_ = 0; }
  bool active() const { return attempt_ > 0; }

 private:
  RetryOptions retry_;
  int attempt_ = 0;
  Jitter jitter_;
};

}  // namespace txbox::relay
