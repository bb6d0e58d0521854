#include "errors.hpp"

#include <fmt/format.h>


namespace txbox::nats::detail {

using brokers::ErrorClass;

bool is_connection_failure(natsStatus status) noexcept {
  switch (status) {
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_INSUFFICIENT_BUFFER:  // reconnecting, and the publisher buffers nothing
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_IO_ERROR:
    case NATS_STALE_CONNECTION:
    case NATS_DRAINING:
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SSL_ERROR:
      return true;
    default:
      return false;
  }
}

ErrorClass classify(const PublishError& e) noexcept {
  switch (e.failure) {
    case Failure::invalid_subject:
    case Failure::reserved_subject:
    case Failure::not_a_stream:
      return ErrorClass::permanent;
    case Failure::connection_lost:
    case Failure::not_sent:
      return ErrorClass::outage;
    case Failure::no_pub_ack:
      return ErrorClass::transient;
    case Failure::reported:
      break;
  }
  if (is_connection_failure(e.status)) return ErrorClass::outage;
  switch (e.status) {
    case NATS_OK:
      return ErrorClass::transient;  // not an error; callers never ask
    case NATS_NO_RESPONDERS:
      if (!e.jetstream_available) return ErrorClass::outage;
      return e.creates_streams ? ErrorClass::transient : ErrorClass::permanent;
    case NATS_INVALID_SUBJECT:
    case NATS_MAX_PAYLOAD:
    case NATS_NOT_PERMITTED:
    case NATS_INVALID_ARG:
      return ErrorClass::permanent;
    default:
      break;
  }
  switch (static_cast<int>(e.code)) {
    case JSNotEnabledErr:
    case JSNotEnabledForAccountErr:
      return ErrorClass::outage;
    case JSStreamNotFoundErr:
    case JSStreamMessageExceedsMaximumErr:
    case JSStreamNotMatchErr:
    case JSStreamWrongLastMsgIDErr:
    case JSStreamWrongLastSequenceErr:
    case JSStreamSequenceNotMatchErr:
    case JSBadRequestErr:
      return ErrorClass::permanent;
    default:
      break;
  }
  // Timeouts on a live connection, JetStream store failed / resources
  // exceeded / cluster unavailable, and any unknown error: retrying later
  // can help.
  return ErrorClass::transient;
}

std::string describe(const PublishError& e, std::string_view subject, std::size_t bytes) {
  const std::string detail = e.text.empty() ? "" : fmt::format(" ({})", e.text);
  switch (e.failure) {
    case Failure::invalid_subject:
      return fmt::format(
          "'{}' is not a valid NATS subject: {}; fix the outbox destination (not "
          "sent; retrying cannot help)",
          subject, e.text);
    case Failure::reserved_subject:
      return fmt::format(
          "'{}' starts with '$': such subjects address NATS or JetStream themselves ($JS.API., "
          "$KV., $O., $SYS., ...; e.g. $JS.API.STREAM.DELETE.<stream> deletes a stream), so "
          "txbox never publishes to them; fix the outbox destination (not sent; retrying cannot "
          "help)",
          subject);
    case Failure::not_a_stream:
      return fmt::format(
          "the subject '{}' is answered by something that is not a JetStream stream (the reply "
          "is not a PubAck naming a stream{}): nothing confirms the message was stored; point "
          "the destination at a subject a stream covers and stop the responder (retrying cannot "
          "help)",
          subject, e.text.empty() ? "" : ": " + e.text);
    case Failure::connection_lost:
      return fmt::format(
          "the NATS connection dropped before JetStream acknowledged the message to '{}'{}: it "
          "may or may not be stored (a re-publish within the stream's duplicate window is "
          "dropped by Nats-Msg-Id); will be retried once the connection is back",
          subject, detail);
    case Failure::not_sent:
      return fmt::format(
          "not sent to '{}': an earlier message of this batch failed because the NATS connection "
          "is down{}, and sending later ones could store them ahead of it; will be retried once "
          "the connection is back",
          subject, detail);
    case Failure::no_pub_ack:
      return fmt::format(
          "no PubAck from JetStream for '{}' by the deadline{} while the connection was up: the "
          "server is slow or overloaded; will be retried (a re-publish within the stream's "
          "duplicate window is dropped by Nats-Msg-Id)",
          subject, detail);
    case Failure::reported:
      break;
  }
  if (is_connection_failure(e.status)) {
    return fmt::format(
        "NATS connection not available while publishing to '{}': {}{}; not buffered, will be "
        "retried once it reconnects",
        subject, natsStatus_GetText(e.status), detail);
  }
  switch (e.status) {
    case NATS_NO_RESPONDERS:
      if (!e.jetstream_available) {
        return fmt::format(
            "JetStream did not answer the publish to '{}' (no responders, and the JetStream API is "
            "not answering either): the server is starting or runs without -js; will be retried "
            "once JetStream answers",
            subject);
      }
      if (e.creates_streams) {
        return fmt::format(
            "no JetStream stream covers subject '{}' (deleted?): create_streams=true creates it "
            "again at the next attempt; will be retried",
            subject);
      }
      return fmt::format(
          "no JetStream stream covers subject '{}': create one, e.g. `nats stream add <name> "
          "--subjects '{}' --storage file --dupe-window 2m`, or let the relay create it with the "
          "broker URL option ?create_streams=true; retrying cannot help until then",
          subject, subject);
    case NATS_TIMEOUT:
      return fmt::format(
          "no PubAck from JetStream in time (subject '{}'): the server is slow or unreachable; "
          "will be retried",
          subject);
    case NATS_MAX_PAYLOAD:
      return fmt::format(
          "message of about {} bytes for '{}' exceeds the server's max_payload{}: raise "
          "max_payload in the nats-server configuration or send smaller messages",
          bytes, subject, detail);
    case NATS_INVALID_SUBJECT:
      return fmt::format("'{}' is not a valid NATS subject{}: fix the outbox destination", subject,
                         detail);
    case NATS_NOT_PERMITTED:
      return fmt::format("the NATS user may not publish to '{}'{}: grant publish permission on it",
                         subject, detail);
    case NATS_INVALID_ARG:
      return fmt::format("message for '{}' cannot be sent{}: fix the outbox row", subject, detail);
    default:
      break;
  }
  switch (static_cast<int>(e.code)) {
    case JSNotEnabledErr:
    case JSNotEnabledForAccountErr:
      return fmt::format(
          "JetStream is not enabled for this NATS account/server (publish to '{}'){}: enable it "
          "(nats-server -js, or the account's jetstream settings); will be retried once "
          "JetStream answers",
          subject, detail);
    case JSStreamNotFoundErr:
      return fmt::format(
          "JetStream stream not found for subject '{}'{}: create it (`nats stream add <name> "
          "--subjects '{}'`) or use ?create_streams=true",
          subject, detail, subject);
    case JSStreamMessageExceedsMaximumErr:
      return fmt::format(
          "message of about {} bytes for '{}' exceeds the stream's max_msg_size{}: raise the "
          "stream's --max-msg-size or send smaller messages",
          bytes, subject, detail);
    default:
      break;
  }
  const bool permanent = classify(e) == ErrorClass::permanent;
  return fmt::format(
      "JetStream publish to '{}' failed: {}{}{}; {}", subject, natsStatus_GetText(e.status),
      e.code != 0 ? fmt::format(" [JetStream error {}]", static_cast<int>(e.code)) : std::string(),
      detail, permanent ? "retrying cannot help" : "will be retried");
}

std::string invalid_subject_reason(std::string_view subject) {
  if (subject.empty()) return "the subject is empty";
  std::size_t token_start = 0;
  for (std::size_t i = 0; i <= subject.size(); ++i) {
    if (i == subject.size() || subject[i] == '.') {
      const auto token = subject.substr(token_start, i - token_start);
      if (token.empty()) return "it has an empty token (leading, trailing or double '.')";
      if (token == "*" || token == ">") return "it contains a wildcard token ('*' or '>')";
      token_start = i + 1;
      continue;
    }
    const char c = subject[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\0') {
      return "it contains whitespace";
    }
  }
  return {};
}

std::string reserved_subject_reason(std::string_view subject) {
  if (!subject.empty() && subject.front() == '$') {
    return "subjects starting with '$' address NATS or JetStream themselves";
  }
  return {};
}

std::optional<PublishError> refuse_subject(std::string_view subject) {
  for (auto [failure, why] : {std::pair{Failure::invalid_subject, invalid_subject_reason(subject)},
                               std::pair{Failure::reserved_subject, reserved_subject_reason(subject)}}) {
    if (why.empty()) continue;
    PublishError e;
    e.failure = failure;
    e.status = NATS_INVALID_SUBJECT;
    e.text = std::move(why);
    return e;
  }
  return std::nullopt;
}

std::optional<PublishError> read_reply(const jsPubAck* ack, const jsPubAckErr* error) {
  if (ack != nullptr) {
    if (ack->Stream != nullptr && ack->Stream[0] != '\0') return std::nullopt;  // stored
    // Valid JSON without a stream name: e.g. the JetStream API's own answer
    // ({"type":"io.nats.jetstream.api.v1.stream_delete_response",...}) or
    // any service answering "{}".
    PublishError e;
    e.failure = Failure::not_a_stream;
    e.status = NATS_ERR;
    e.text = "a reply without a stream name";
    return e;
  }
  PublishError e;
  if (error == nullptr) {
    e.status = NATS_ERR;
    e.text = "cnats reported neither a PubAck nor an error";
    return e;
  }
  e.status = error->Err;
  e.code = error->ErrCode;
  e.text = error->ErrText != nullptr ? error->ErrText : "";
  // cnats sets the text to the bare status text when the reply itself could
  // not be read (not JSON, or JSON with fields of the wrong type) and to the
  // server's description for a JetStream API error; a JetStream error always
  // carries an error code (nats-server >= 2.2).
  if (e.code == 0 && (e.status == NATS_ERR || e.status == NATS_INVALID_ARG) &&
      (e.text.empty() || e.text == natsStatus_GetText(e.status))) {
    e.failure = Failure::not_a_stream;
    e.text = "a reply that is not a JetStream PubAck";
  }
  return e;
}

}  // namespace txbox::nats::detail
