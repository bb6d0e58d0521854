#pragma once
// Private to the Kafka adapter (and its tests): how librdkafka error codes
// map onto the broker-neutral ErrorClass, and the human-readable reasons.

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::kafka::detail {

// THE classification of a produce outcome (from rd_kafka_producev or from a
// delivery report). Permanent = retrying the same message can never succeed
// (too large, invalid, unknown topic once reported final, not authorized);
// everything else is transient (network, timeouts, leader elections, ...).
brokers::ErrorClass classify(rd_kafka_resp_err_t err) noexcept;

// What happened and what to do, for PublishResult::error. `bytes` is the
// approximate wire size of the message (key + payload + headers).
std::string describe_publish_error(rd_kafka_resp_err_t err, std::string_view topic,
                                   std::size_t bytes, std::chrono::milliseconds message_timeout);

// Consumer side: true when an error seen while polling leaves the consumer
// unusable (fatal, authentication/authorization, invalid configuration);
// false for informational ones (partition EOF, unknown topic, transport).
bool consumer_error_is_fatal(rd_kafka_resp_err_t err) noexcept;

}  // namespace txbox::kafka::detail
