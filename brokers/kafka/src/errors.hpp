#pragma once
// Private to the Kafka adapter (and its tests): the pure decisions of the
// publisher, reachable without a server. How librdkafka error codes map onto
// the broker-neutral ErrorClass, the human-readable reasons, which message of
// a rejected MessageSet is the oversized one, which destinations are refused,
// and when a re-published message may wait for the copy already queued.

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::kafka::detail {

// THE classification of a produce outcome (from rd_kafka_producev, from a
// delivery report, or "no report yet"). `all_brokers_down`: the producer
// believes no broker is reachable (librdkafka raised ERR__ALL_BROKERS_DOWN
// and nothing was delivered or probed successfully since).
//   permanent: retrying the same message can never succeed (too large,
//              invalid, unknown topic once reported final, not authorized);
//   outage:    the cluster as a whole is unreachable (transport, all brokers
//              down, authentication), and timeouts while all brokers are down;
//   transient: everything else (timeouts of a reachable cluster, leader
//              elections, queue full, a recreated producer, ...).
brokers::ErrorClass classify(rd_kafka_resp_err_t err, bool all_brokers_down = false) noexcept;

// True for the errors a broker gives a whole MessageSet when it (or one of
// its messages) is over a size limit.
bool is_size_error(rd_kafka_resp_err_t err) noexcept;

// The broker rejects a whole MessageSet for its size, so every message in it
// fails with the same size error; only the largest of them can be the
// offender. Given the sizes of the messages that failed together, returns
// the index of the offender: the first of the largest. nullopt when empty.
std::optional<std::size_t> pick_size_offender(std::span<const std::size_t> bytes) noexcept;

// Why txbox refuses to produce to `topic` (a permanent failure; the message
// is never handed to librdkafka), or nullopt when the name is acceptable.
// Refused: the empty name, names starting with "__" (Kafka's internal topics
// such as __consumer_offsets and __transaction_state: writing there corrupts
// the cluster's own state), and names Kafka would reject (".", "..", longer
// than 249 characters, characters outside [a-zA-Z0-9._-]).
std::optional<std::string> refuse_destination(std::string_view topic);

// Identifies a message's content (destination, key, payload, headers): a
// re-published message attaches to the copy already queued only if the id
// AND this fingerprint match (message_id is not unique in the outbox: a
// replayed dead letter may carry the id of an earlier, different row).
std::uint64_t content_fingerprint(const brokers::Message& message) noexcept;

// What happened and what to do, for PublishResult::error. `bytes` is the
// approximate wire size of the message (key + payload + headers).
// `message_timeout` is the producer's message.timeout.ms (0 = infinite).
std::string describe_publish_error(rd_kafka_resp_err_t err, std::string_view topic,
                                   std::size_t bytes, std::chrono::milliseconds message_timeout);

// The result of one message of a MessageSet the broker rejected for its
// size: the offender fails permanently, the others transiently.
brokers::PublishResult size_rejection_result(rd_kafka_resp_err_t err, std::string_view topic,
                                             std::size_t bytes, bool offender,
                                             std::size_t offender_bytes);

// The result of a message with no delivery report when wait() gave up after
// `waited`. The message stays queued in the producer in its place.
brokers::PublishResult no_report_result(std::string_view topic, std::chrono::milliseconds waited,
                                        bool all_brokers_down);

// Consumer side: true when an error seen while polling leaves the consumer
// unusable (fatal, authentication/authorization, invalid configuration);
// false for informational ones (partition EOF, unknown topic, transport).
bool consumer_error_is_fatal(rd_kafka_resp_err_t err) noexcept;

}  // namespace txbox::kafka::detail
