#include "ack_order.hpp"

namespace txbox::consumer::detail {

void AckOrder::add(const brokers::Delivery& delivery) {
  Partition& p = partitions_[{delivery.source, delivery.partition}];
  p.unsettled[{delivery.offset, delivery.ack_token}].push_back(p.next++);
  p.entries.emplace_back();
  ++outstanding_;
}

void AckOrder::settle(brokers::Delivery delivery) {
  auto partition = partitions_.find({delivery.source, delivery.partition});
  if (partition == partitions_.end()) {
    unknown_.push_back(std::move(delivery));
    return;
  }
  Partition& p = partition->second;
  auto sequence = p.unsettled.find({delivery.offset, delivery.ack_token});
  if (sequence == p.unsettled.end()) {
    unknown_.push_back(std::move(delivery));
    return;
  }
  const uint64_t n = sequence->second.front();
  sequence->second.pop_front();
  if (sequence->second.empty()) p.unsettled.erase(sequence);
  p.entries[n - p.first] = std::move(delivery);
}

std::vector<brokers::Delivery> AckOrder::take_ready() {
  std::vector<brokers::Delivery> ready = std::move(unknown_);
  unknown_.clear();
  for (auto it = partitions_.begin(); it != partitions_.end();) {
    Partition& p = it->second;
    while (!p.entries.empty() && p.entries.front()) {
      ready.push_back(std::move(*p.entries.front()));
      p.entries.pop_front();
      ++p.first;
      --outstanding_;
    }
    // A partition with nothing outstanding is forgotten (a revoked Kafka
    // partition does not stay here for ever).
    if (p.entries.empty()) it = partitions_.erase(it);
    else ++it;
  }
  return ready;
}

}  // namespace txbox::consumer::detail
