#include "order_barrier.hpp"

#include <fmt/format.h>

namespace txbox::kafka::detail {

std::optional<std::string> OrderBarrier::refusal() {
  if (holding_until_ == 0) {
    return std::nullopt;
  }
  if (!unsettled_.empty() && *unsettled_.begin() <= holding_until_) {
    return fmt::format(
        "not sent: the Kafka producer lost messages of an earlier batch ({}) and that batch has "
        "not been waited for yet; sending now could store this message before an earlier one of "
        "its key; will be retried",
        reason_);
  }
  holding_until_ = 0;
  reason_.clear();
  return std::nullopt;
}

std::uint64_t OrderBarrier::start_batch() {
  const std::uint64_t sequence = next_sequence_++;
  unsettled_.insert(sequence);
  return sequence;
}

void OrderBarrier::settle_batch(std::uint64_t sequence) { unsettled_.erase(sequence); }

void OrderBarrier::note_loss(std::string reason) {
  holding_until_ = next_sequence_ - 1;
  reason_ = std::move(reason);
}

}  // namespace txbox::kafka::detail
