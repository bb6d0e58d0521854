#pragma once
// Shared by the RabbitMQ relay and fault tests: consuming a queue through
// the inbox (their relay command lines: relay_drain_command in
// fault/fault_support.hpp). The broker-only helpers (consumers, private
// nodes) are in rabbitmq_node.hpp.

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "fault/fault_support.hpp"
#include "rabbitmq_node.hpp"
#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/consumer/inbox_consumer.hpp"
#include "txbox/rabbitmq/rabbitmq.hpp"

namespace txbox::test {

// Consumes `queue` through the inbox into `effects` until it holds n rows.
inline consumer::ConsumeStats consume_queue_into_effects(const std::string& db_url, const std::string& broker_url,
                                                         const std::string& queue, long long n,
                                                         std::chrono::seconds timeout = std::chrono::seconds(240)) {
  return consume_broker_into_effects(db_url, [&] { return rabbit_consumer(broker_url, queue); }, n, timeout);
}

}  // namespace txbox::test
