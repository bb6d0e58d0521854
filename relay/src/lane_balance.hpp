#pragma once
// Fair sharing of the 256 lanes among all relay workers of all relay
// processes, decided by each process for its own workers from one look at
// the fleet (who holds which lane, how many workers there are). Pure.
//
// Every worker aims for at most ceil(256 / workers in the fleet) lanes: a
// worker above it gives lanes back (between batches), a worker below it
// takes free ones. No coordinator is needed: a new relay's workers count in
// the fleet at once, the others give back, the new ones take what is free;
// a killed relay's session locks vanish and the survivors take its lanes.
// Two processes reaching for the same free lane race on a try-lock; the
// loser simply tries another lane at the next look.

#include <cstdint>
#include <span>
#include <vector>

#include "txbox/outbox/store.hpp"

namespace txbox::relay {

using outbox::Lane;

struct LaneChange {
  std::vector<Lane> acquire;  // free lanes to try to lock
  int release = 0;            // how many of its lanes to give back
};

// `fleet_workers`: workers of all processes (at least the local ones are
// counted); `taken`: every lane some worker holds, the local ones included;
// `owned[w]`: the lanes local worker w holds. `seed` spreads the free lanes
// differently in each process, so processes rarely reach for the same ones.
std::vector<LaneChange> plan_lanes(int fleet_workers, std::span<const Lane> taken,
                                   std::span<const std::vector<Lane>> owned, uint32_t seed);

// The most lanes one worker should hold with `fleet_workers` in the fleet.
int fair_share(int fleet_workers);

}  // namespace txbox::relay
