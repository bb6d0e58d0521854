#pragma once
// Private to the NATS adapter (and its tests): THE mapping of cnats /
// JetStream publish outcomes onto the broker-neutral ErrorClass, and the
// human-readable reasons saying what to do next.

#include <nats/nats.h>

#include <chrono>
#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::nats::detail {

// What went wrong with one JetStream publish.
struct PublishError {
  natsStatus status = NATS_OK;  // cnats status (NATS_ERR for a server-side JetStream error)
  jsErrCode code = static_cast<jsErrCode>(0);  // JetStream API error code, 0 if none
  std::string text;             // server / library text, may be empty
  // Only meaningful for NATS_NO_RESPONDERS: whether the JetStream API itself
  // answered (then no stream listens on the subject: permanent) or not
  // (JetStream not up yet, e.g. right after a server restart: transient).
  bool jetstream_available = true;
  // Also for NATS_NO_RESPONDERS: the publisher runs with create_streams=true
  // and creates the missing stream at the next attempt (transient).
  bool creates_streams = false;
};

// THE classification. Permanent = retrying the same message cannot succeed:
// no stream covers the subject (a publish "no responders" while JetStream
// answers and create_streams is off), stream not found, message larger than max_payload / the
// stream's max_msg_size, invalid subject, not permitted. Everything else
// (timeouts, disconnects, closed connection, no server, JetStream
// unavailable or out of resources, unknown errors) is transient.
brokers::ErrorClass classify(const PublishError& error) noexcept;

// What happened and what to do, for PublishResult::error.
std::string describe(const PublishError& error, std::string_view subject, std::size_t bytes,
                     std::chrono::milliseconds timeout);

// Subject check done before sending: empty text when `subject` is a valid
// publish subject (non-empty tokens separated by '.', no wildcards, no
// whitespace), else why not.
std::string invalid_subject_reason(std::string_view subject);

}  // namespace txbox::nats::detail
