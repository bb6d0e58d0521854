#include "errors.hpp"

#include <fmt/format.h>

namespace txbox::nats::detail {

using brokers::ErrorClass;

ErrorClass classify(const PublishError& e) noexcept {
  switch (e.status) {
    case NATS_OK:
      return ErrorClass::transient;  // not an error; callers never ask
    case NATS_NO_RESPONDERS:
      return e.jetstream_available && !e.creates_streams ? ErrorClass::permanent
                                                         : ErrorClass::transient;
    case NATS_INVALID_SUBJECT:
    case NATS_MAX_PAYLOAD:
    case NATS_NOT_PERMITTED:
    case NATS_INVALID_ARG:
      return ErrorClass::permanent;
    default:
      break;
  }
  switch (static_cast<int>(e.code)) {
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
  // Timeouts, disconnects, closed connection, no server, stale connection,
  // JetStream not available / store failed / resources exceeded, and any
  // unknown error: retrying later can help.
  return ErrorClass::transient;
}

std::string describe(const PublishError& e, std::string_view subject, std::size_t bytes,
                     std::chrono::milliseconds timeout) {
  const std::string detail = e.text.empty() ? "" : fmt::format(" ({})", e.text);
  switch (e.status) {
    case NATS_NO_RESPONDERS:
      if (e.creates_streams) {
        return fmt::format(
            "no JetStream stream covers subject '{}' (deleted?): create_streams=true creates it "
            "again at the next attempt; will be retried",
            subject);
      }
      if (e.jetstream_available) {
        return fmt::format(
            "no JetStream stream covers subject '{}': create one, e.g. `nats stream add <name> "
            "--subjects '{}' --storage file --dupe-window 2m`, or let the relay create it with the "
            "broker URL option ?create_streams=true; retrying cannot help until then",
            subject, subject);
      }
      return fmt::format(
          "JetStream did not answer the publish to '{}' (no responders, and the JetStream API is "
          "not answering either): the server is starting or runs without -js; will be retried",
          subject);
    case NATS_TIMEOUT:
      return fmt::format(
          "no PubAck from JetStream within the publish timeout of {} ms (subject '{}'): the "
          "server is unreachable or slow; will be retried",
          timeout.count(), subject);
    case NATS_MAX_PAYLOAD:
      return fmt::format(
          "message of about {} bytes for '{}' exceeds the server's max_payload{}: raise "
          "max_payload in the nats-server configuration or send smaller messages",
          bytes, subject, detail);
    case NATS_INVALID_SUBJECT:
      return fmt::format("'{}' is not a valid NATS subject{}: fix the outbox destination", subject,
                         detail);
    case NATS_NOT_PERMITTED:
      return fmt::format(
          "the NATS user may not publish to '{}'{}: grant publish permission on it", subject,
          detail);
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_IO_ERROR:
    case NATS_STALE_CONNECTION:
      return fmt::format(
          "NATS connection not available while publishing to '{}': {}{}; will be retried once it "
          "reconnects",
          subject, natsStatus_GetText(e.status), detail);
    default:
      break;
  }
  switch (static_cast<int>(e.code)) {
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
  return fmt::format("JetStream publish to '{}' failed: {}{}{}; will be retried", subject,
                     natsStatus_GetText(e.status),
                     e.code != 0 ? fmt::format(" [JetStream error {}]", static_cast<int>(e.code))
                                 : std::string(),
                     detail);
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

}  // namespace txbox::nats::detail
