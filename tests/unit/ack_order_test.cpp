// The consumer's ack order across lanes (pure logic): a delivery is released
// for its ack only when every earlier delivery of its partition is settled.
#include <catch2/catch.hpp>

#include "ack_order.hpp"

using txbox::brokers::Delivery;
using txbox::consumer::detail::AckOrder;

namespace {
Delivery at(int32_t partition, int64_t offset, std::string token = {}) {
  Delivery d;
  d.source = "orders";
  d.partition = partition;
  d.offset = offset;
  d.ack_token = std::move(token);
  return d;
}
std::vector<std::pair<int32_t, int64_t>> positions(const std::vector<Delivery>& ds) {
  std::vector<std::pair<int32_t, int64_t>> out;
  for (const auto& d : ds) out.emplace_back(d.partition, d.offset);
  return out;
}
}  // namespace

TEST_CASE("ack order: a partition's acks wait for its earliest unsettled delivery, other partitions do not",
          "[unit][consumer]") {
  AckOrder order;
  for (int64_t o = 0; o < 4; ++o) order.add(at(0, o));
  order.add(at(1, 10));
  order.settle(at(0, 2));
  order.settle(at(1, 10));
  CHECK(positions(order.take_ready()) == std::vector<std::pair<int32_t, int64_t>>{{1, 10}});
  order.settle(at(0, 0));
  order.settle(at(0, 3));
  CHECK(positions(order.take_ready()) == std::vector<std::pair<int32_t, int64_t>>{{0, 0}});
  CHECK(order.outstanding() == 3);
  order.settle(at(0, 1));
  CHECK(positions(order.take_ready()) == std::vector<std::pair<int32_t, int64_t>>{{0, 1}, {0, 2}, {0, 3}});
  CHECK(order.outstanding() == 0);
  CHECK(order.take_ready().empty());
}

TEST_CASE("ack order: deliveries sharing an offset are told apart by their ack token, repeats first in first out",
          "[unit][consumer]") {
  AckOrder order;
  // Redis entries of one millisecond share the offset; a RabbitMQ
  // redelivery on a new connection can repeat a tag.
  order.add(at(0, 5, "5-0"));
  order.add(at(0, 5, "5-1"));
  order.add(at(0, 5, "5-0"));
  order.settle(at(0, 5, "5-1"));
  CHECK(order.take_ready().empty());
  order.settle(at(0, 5, "5-0"));
  CHECK(order.take_ready().size() == 2);
  order.settle(at(0, 5, "5-0"));
  CHECK(order.take_ready().size() == 1);
  CHECK(order.outstanding() == 0);
}

TEST_CASE("ack order: a delivery it never saw is released at once rather than held forever", "[unit][consumer]") {
  AckOrder order;
  order.add(at(0, 1));
  order.settle(at(3, 7));
  CHECK(positions(order.take_ready()) == std::vector<std::pair<int32_t, int64_t>>{{3, 7}});
  CHECK(order.outstanding() == 1);
}
