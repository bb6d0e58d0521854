#pragma once
// Private to the NATS adapter (and its tests): THE mapping of cnats /
// JetStream publish outcomes onto the broker-neutral ErrorClass, the checks
// done on a subject before anything is sent, how a reply to a JetStream
// publish is read, and the human-readable reasons saying what to do next.
// Everything here is pure: unit tests reach it without a server.

#include <nats/nats.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::nats::detail {

// Why a message has no PubAck, where cnats's status alone does not say it.
enum class Failure {
  reported,          // `status` / `code` as reported by cnats or a JetStream API error
  invalid_subject,   // not a literal subject (checked before sending; never sent)
  reserved_subject,  // the subject starts with '$' (NATS/JetStream API; never sent)
  not_a_stream,      // the subject was answered, but not with a PubAck naming a stream
  connection_lost,   // sent, but the connection dropped before its PubAck came: the
                     // PubAck can no longer arrive (it may or may not be stored)
  not_sent,          // an earlier message of the batch failed because the connection
                     // was down: this one was not sent, to keep per-key order
  no_pub_ack,        // no PubAck by the caller's deadline while the connection was up
};

// What went wrong with one JetStream publish.
struct PublishError {
  Failure failure = Failure::reported;
  natsStatus status = NATS_OK;  // cnats status (NATS_ERR for a server-side JetStream error)
  jsErrCode code = static_cast<jsErrCode>(0);  // JetStream API error code, 0 if none
  std::string text;  // server / library text, or the adapter's detail; may be empty
  // Only meaningful for NATS_NO_RESPONDERS: whether the JetStream API itself
  // answered (then no stream listens on the subject: permanent) or not
  // (JetStream not up, server without -js: outage).
  bool jetstream_available = true;
  // Also for NATS_NO_RESPONDERS: the publisher runs with create_streams=true
  // and creates the missing stream at the next attempt (transient).
  bool creates_streams = false;

  // A status (and JetStream code) as reported by cnats.
  static PublishError reported(natsStatus status, std::string text = {},
                               jsErrCode code = static_cast<jsErrCode>(0)) {
    PublishError e;
    e.status = status;
    e.code = code;
    e.text = std::move(text);
    return e;
  }
  // A failure the adapter itself detected.
  static PublishError of(Failure failure, std::string text = {}) {
    PublishError e;
    e.failure = failure;
    e.text = std::move(text);
    return e;
  }
};

// True for the statuses that mean "the connection is not usable right now":
// closed, disconnected, reconnecting (NATS_INSUFFICIENT_BUFFER: the
// publisher's connection has no reconnect buffer, so a publish while
// reconnecting fails with it at once), no server, I/O error, stale, draining.
bool is_connection_failure(natsStatus status) noexcept;

// THE classification.
//  outage:    the connection is down or reconnecting (any is_connection_failure
//             status, a message not sent or left without PubAck because of it),
//             or JetStream does not answer at all (no responders while the
//             JetStream API is silent too; JetStream not enabled);
//  permanent: retrying the same message cannot succeed: invalid subject, a '$'
//             subject, a reply that is not a PubAck of a stream, no stream for
//             the subject (JetStream answers, create_streams off), stream not
//             found, larger than max_payload / the stream's max_msg_size, not
//             permitted, bad header;
//  transient: everything else: no PubAck by the deadline on a live connection,
//             JetStream errors that can clear (store failed, insufficient
//             resources, cluster unavailable), unknown errors.
brokers::ErrorClass classify(const PublishError& error) noexcept;

// What happened and what to do, for PublishResult::error. Never contains
// credentials (only the subject and texts from the server or cnats).
std::string describe(const PublishError& error, std::string_view subject, std::size_t bytes);

// Subject check done before sending: empty text when `subject` is a valid
// publish subject (non-empty tokens separated by '.', no wildcards, no
// whitespace), else why not.
std::string invalid_subject_reason(std::string_view subject);

// Empty text unless `subject` starts with '$': those address NATS or
// JetStream themselves ($JS.API.STREAM.DELETE.<stream> deletes a stream,
// $KV., $O., $SYS., ...) and are never published from an outbox row.
std::string reserved_subject_reason(std::string_view subject);

// Both checks: the permanent error for a subject that must not be sent, or
// nullopt when it may be published.
std::optional<PublishError> refuse_subject(std::string_view subject);

// How one reply to a JetStream publish reads (the arguments of cnats's async
// ack handler). nullopt = confirmed: a PubAck that names a stream (a
// duplicate PubAck included). A reply without a stream name, or one cnats
// could not read as a PubAck or a JetStream API error (e.g. "+OK" from a core
// NATS responder), is Failure::not_a_stream.
std::optional<PublishError> read_reply(const jsPubAck* ack, const jsPubAckErr* error);

}  // namespace txbox::nats::detail
