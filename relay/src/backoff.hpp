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
// min(cap, base * factor^(attempt-1)), jittered into [delay/2, delay].
template <typename Random>
std::chrono::milliseconds retry_delay(const RetryOptions& retry, int attempt, Random& random) {
  double raw = static_cast<double>(retry.base.count()) *
               std::pow(retry.factor, std::max(0, attempt - 1));
  double capped = std::min(raw, static_cast<double>(retry.cap.count()));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  return std::chrono::milliseconds(static_cast<long long>(capped * jitter(random)));
}

class Backoff {
 public:
  Backoff(std::chrono::milliseconds base, double factor, std::chrono::milliseconds cap)
      : retry_{base, factor, cap} {}
  std::chrono::milliseconds next() { return retry_delay(retry_, ++attempt_, random_); }
  void reset() { attempt_ = 0; }

 private:
  RetryOptions retry_;
  int attempt_ = 0;
  std::mt19937 random_{std::random_device{}()};
};

}  // namespace txbox::relay
