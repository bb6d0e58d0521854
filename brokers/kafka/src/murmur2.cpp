// Kafka's Java-client partitioning hash (org.apache.kafka.common.utils.Utils.murmur2).

#include <stdexcept>

#include "txbox/kafka/kafka.hpp"

namespace txbox::kafka {

namespace {

uint32_t java_murmur2(std::string_view data) {
  const auto length = static_cast<uint32_t>(data.size());
  constexpr uint32_t seed = 0x9747b28c;
  constexpr uint32_t m = 0x5bd1e995;
  constexpr int r = 24;
  const auto byte = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<unsigned char>(data[i]));
  };

  uint32_t h = seed ^ length;
  const size_t length4 = data.size() / 4;
  for (size_t i = 0; i < length4; ++i) {
    const size_t i4 = i * 4;
    uint32_t k = byte(i4) | (byte(i4 + 1) << 8) | (byte(i4 + 2) << 16) | (byte(i4 + 3) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const size_t tail = data.size() & ~size_t{3};
  switch (data.size() % 4) {
    case 3:
      h ^= byte(tail + 2) << 16;
      [[fallthrough]];
    case 2:
      h ^= byte(tail + 1) << 8;
      [[fallthrough]];
    case 1:
      h ^= byte(tail);
      h *= m;
      break;
    default:
      break;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return h;
}

}  // namespace

int32_t murmur2_partition(std::string_view key, int32_t partition_count) {
  if (partition_count <= 0) {
    throw txbox::UsageError("murmur2_partition: partition_count must be > 0");
  }
  const uint32_t positive = java_murmur2(key) & 0x7fffffffu;
  return static_cast<int32_t>(positive % static_cast<uint32_t>(partition_count));
}

}  // namespace txbox::kafka
