#include "lane_balance.hpp"

#include <algorithm>
#include <bitset>

namespace txbox::relay {

int fair_share(int fleet_workers) {
  const int workers = std::max(fleet_workers, 1);
  return (outbox::kLaneCount + workers - 1) / workers;
}

std::vector<LaneChange> plan_lanes(int fleet_workers, std::span<const Lane> taken,
                                   std::span<const std::vector<Lane>> owned, uint32_t seed) {
  const int share = fair_share(std::max<int>(fleet_workers, static_cast<int>(owned.size())));
  std::bitset<outbox::kLaneCount> busy;
  for (Lane lane : taken)
    if (lane >= 0 && lane < outbox::kLaneCount) busy.set(static_cast<size_t>(lane));
  for (const auto& lanes : owned)
    for (Lane lane : lanes)
      if (lane >= 0 && lane < outbox::kLaneCount) busy.set(static_cast<size_t>(lane));

  // Free lanes, starting at a process-specific offset.
  std::vector<Lane> free;
  for (int i = 0; i < outbox::kLaneCount; ++i) {
    const int lane = static_cast<int>((static_cast<uint32_t>(i) + seed) % outbox::kLaneCount);
    if (!busy.test(static_cast<size_t>(lane))) free.push_back(static_cast<Lane>(lane));
  }

  std::vector<LaneChange> changes(owned.size());
  size_t next_free = 0;
  for (size_t w = 0; w < owned.size(); ++w) {
    const int have = static_cast<int>(owned[w].size());
    if (have > share) {
      changes[w].release = have - share;
      continue;
    }
    while (static_cast<int>(changes[w].acquire.size()) + have < share && next_free < free.size())
      changes[w].acquire.push_back(free[next_free++]);
  }
  return changes;
}

}  // namespace txbox::relay
