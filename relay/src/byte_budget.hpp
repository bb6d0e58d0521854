#pragma once
// The payload bytes one relay process holds in flight, across all workers
// and all batches (--max-batch-bytes). A claim reserves its share first and
// gives back what it did not use; a row larger than the whole budget is
// published alone, with nothing else in flight. This bounds the relay's
// memory whatever the payload sizes are.

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stop_token>

namespace txbox::relay {

class ByteBudget {
 public:
  explicit ByteBudget(int64_t limit) : limit_(std::max<int64_t>(limit, 1)) {}

  int64_t limit() const { return limit_; }

  // Reserves up to `want` bytes without waiting; returns how many it got (0
  // when none are free, or while an oversized row waits for the whole budget).
  int64_t try_reserve(int64_t want) {
    std::lock_guard lock(mutex_);
    if (exclusive_waiters_ > 0) return 0;
    int64_t got = std::clamp<int64_t>(limit_ - in_use_, 0, want);
    in_use_ += got;
    return got;
  }

  // Waits until `bytes` are free and reserves them. More than the limit is
  // granted only when nothing else is in flight (and meanwhile nobody else
  // may reserve). The caller must hold no reservation while it waits.
  // Returns false when `stop` is requested first.
  bool reserve(int64_t bytes, std::stop_token stop) {
    std::unique_lock lock(mutex_);
    const bool oversized = bytes > limit_;
    if (oversized) ++exclusive_waiters_;
    const bool granted = cv_.wait(lock, stop, [&] {
      return oversized ? in_use_ == 0 : in_use_ + bytes <= limit_ && exclusive_waiters_ == 0;
    });
    if (oversized) --exclusive_waiters_;
    if (granted) in_use_ += bytes;
    if (oversized) cv_.notify_all();  // others may go on (or still wait for this one)
    return granted;
  }

  void release(int64_t bytes) {
    if (bytes <= 0) return;
    {
      std::lock_guard lock(mutex_);
      in_use_ = std::max<int64_t>(0, in_use_ - bytes);
    }
    cv_.notify_all();
  }

  // Waits until some bytes are free (or `stop`), for a claim that got none.
  void wait_for_room(std::stop_token stop) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, stop, [&] { return in_use_ < limit_ && exclusive_waiters_ == 0; });
  }

  int64_t in_use() const {
    std::lock_guard lock(mutex_);
    return in_use_;
  }

 private:
  const int64_t limit_;
  mutable std::mutex mutex_;
  std::condition_variable_any cv_;
  int64_t in_use_ = 0;
  int exclusive_waiters_ = 0;
};

}  // namespace txbox::relay
