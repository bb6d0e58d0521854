#pragma once
// Private to the Kafka adapter (and its tests): when the producer loses
// messages in bulk (replaced after a fatal error, or produce() failed
// transiently), later batches must not be sent before the caller has seen
// those failures, or a later message of a key could be stored while an
// earlier one is missing. The barrier holds back new batches until every
// batch started before the loss has been settled (waited for or abandoned).

#include <cstdint>
#include <optional>
#include <set>
#include <string>

namespace txbox::kafka::detail {

// Not thread-safe: the publisher guards it with its mutex.
class OrderBarrier {
 public:
  // Why a batch may not start now (nullopt: it may). Lifts the barrier once
  // every batch it holds back for is settled.
  std::optional<std::string> refusal();

  // A batch starts: returns its sequence number (> 0), for settle().
  std::uint64_t start_batch();

  // The batch is settled (its results were collected, or it was abandoned).
  void settle_batch(std::uint64_t sequence);

  // Messages were lost: every batch started so far holds back new ones.
  void note_loss(std::string reason);

  // Batches started and not settled yet.
  std::size_t unsettled() const { return unsettled_.size(); }

 private:
  std::set<std::uint64_t> unsettled_;
  std::uint64_t next_sequence_ = 1;
  std::uint64_t holding_until_ = 0;  // batches with sequence <= this hold back new ones
  std::string reason_;
};

}  // namespace txbox::kafka::detail
