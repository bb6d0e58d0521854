#pragma once
// The order in which deliveries finished by several lanes may be
// acknowledged. Lanes finish out of broker order, but a Kafka commit is
// cumulative (committing offset N settles everything before it in the
// partition, and a RabbitMQ ack with `multiple` likewise): so a delivery is
// released for its ack only once every earlier delivery of its partition
// is settled too. Pure logic, no I/O.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "txbox/brokers/message.hpp"

namespace txbox::consumer::detail {

class AckOrder {
 public:
  // A delivery handed to a lane, in the order the broker delivered it.
  void add(const brokers::Delivery& delivery);
  // A lane has settled it (committed, duplicate, or dead-lettered). A
  // delivery never added is released at once.
  void settle(brokers::Delivery delivery);
  // The settled deliveries with nothing unsettled before them in their
  // partition, in broker order per partition; removed from the order.
  std::vector<brokers::Delivery> take_ready();
  // Deliveries added and not yet taken.
  size_t outstanding() const noexcept { return outstanding_; }

 private:
  // A delivery is known by its position and its ack token (Redis entries of
  // one millisecond share an offset; RabbitMQ tags restart on a new
  // connection), and a repeat of both is matched first in, first out.
  using Identity = std::pair<int64_t, std::string>;
  struct Partition {
    std::deque<std::optional<brokers::Delivery>> entries;  // settled or not, in broker order
    uint64_t first = 0;                                     // sequence number of entries.front()
    uint64_t next = 0;                                      // sequence number of the next add
    std::map<Identity, std::deque<uint64_t>> unsettled;     // sequence numbers by identity
  };
  std::map<std::pair<std::string, int32_t>, Partition> partitions_;
  std::vector<brokers::Delivery> unknown_;
  size_t outstanding_ = 0;
};

}  // namespace txbox::consumer::detail
