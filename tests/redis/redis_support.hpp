#pragma once
// Shared by the Redis relay and fault tests: redis_client.hpp plus consuming
// a stream through the inbox into the effects table (relay command lines:
// relay_drain_command in fault_support.hpp).

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fault/fault_support.hpp"
#include "redis_client.hpp"
#include "txbox/consumer/inbox_consumer.hpp"

namespace txbox::test::redis {

// Consumes `stream` through the inbox into `effects` until it holds n rows.
inline consumer::ConsumeStats consume_into_effects(const std::string& db_url, const std::string& redis_url,
                                                   const std::string& stream, long long n,
                                                   std::chrono::seconds timeout = std::chrono::seconds(240)) {
  return consume_broker_into_effects(
      db_url, [&] { return consumer(redis_url, consumer_options(stream, unique_name("verify"), "verifier")); }, n,
      timeout, AfterProcessed::stop);
}

}  // namespace txbox::test::redis
