#pragma once
// The one wire format of txbox, shared by the four broker adapters, the
// relay and the consumers (docs/wire-format.md describes it for people who
// write consumers in other languages): the names of the headers txbox
// writes and reads, and the one set of dead-letter headers.
//
// Every name is a std::string_view over a string literal, so `.data()` is
// NUL-terminated and can be handed to the C client libraries.

#include <chrono>
#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::brokers::wire {

// Message headers (where each lives per broker: docs/wire-format.md).
inline constexpr std::string_view kMessageId = "message-id";      // the message id (UUID text)
inline constexpr std::string_view kMessageKey = "message-key";    // the key, where the broker has no key of its own
inline constexpr std::string_view kContentType = "content-type";  // MIME type of the payload, when given
inline constexpr std::string_view kTraceparent = "traceparent";   // reserved: W3C trace context (not written yet)

// NATS: JetStream's deduplication header, set to the message id too.
inline constexpr std::string_view kNatsMsgId = "Nats-Msg-Id";

// Redis stream entries: the fields besides the message headers.
inline constexpr std::string_view kPayloadField = "payload";  // the payload bytes
inline constexpr std::string_view kHeadersField = "headers";  // the other headers, a JSON object
// Entries written before the rename carry the key in this field; readers
// still accept it.
inline constexpr std::string_view kLegacyKeyField = "key";

// Dead-letter headers: every dead letter carries them, whoever made it.
inline constexpr std::string_view kDeadLetterPrefix = "dlq-";
inline constexpr std::string_view kDlqError = "dlq-error";            // why, one line
inline constexpr std::string_view kDlqErrorClass = "dlq-error-class";  // permanent | transient | handler | max-deliveries
inline constexpr std::string_view kDlqAttempts = "dlq-attempts";      // decimal
inline constexpr std::string_view kDlqOriginalDestination = "dlq-original-destination";
inline constexpr std::string_view kDlqOriginalPosition = "dlq-original-position";  // omitted where there is none
inline constexpr std::string_view kDlqTimestamp = "dlq-timestamp";  // RFC 3339 UTC with milliseconds

// dlq-error-class values.
inline constexpr std::string_view kClassPermanent = "permanent";  // relay: the broker refused the message
inline constexpr std::string_view kClassTransient = "transient";  // relay: retries spent
inline constexpr std::string_view kClassHandler = "handler";      // consumer: the handler failed (or refused it)
inline constexpr std::string_view kClassMaxDeliveries = "max-deliveries";  // consumer: delivered too often, never acked

// One dead letter, as its headers describe it. Every member has a default,
// so designated initializers may leave any of them out.
struct DeadLetter {
  std::string error{};                 // the reason (line breaks become spaces)
  std::string error_class{};           // one of the kClass* values
  int attempts = 0;                    // attempts made (see docs/wire-format.md)
  std::string original_destination{};  // topic / exchange[/routing key] / subject / stream
  // Kafka "partition/offset" ("3/1234"), Redis stream entry id, NATS stream
  // sequence; empty where there is none (no dlq-original-position header).
  std::string original_position{};
  std::chrono::system_clock::time_point at = std::chrono::system_clock::now();
};

// The dlq-* headers of `letter`, in this order: dlq-error, dlq-error-class,
// dlq-attempts, dlq-original-destination, dlq-original-position (only when
// not empty), dlq-timestamp.
Headers dead_letter_headers(const DeadLetter& letter);

// True for the names of dead-letter headers (the "dlq-" prefix), this
// format's and earlier ones'.
bool is_dead_letter_header(std::string_view name) noexcept;

// Appends the dead-letter headers of `letter` to `headers` after removing
// any dead-letter headers already there (a replayed dead letter that dies
// again carries only the latest set).
void add_dead_letter_headers(Headers& headers, const DeadLetter& letter);

// "2026-11-29T07:55:01.123Z": RFC 3339, UTC, milliseconds (truncated).
std::string rfc3339_utc(std::chrono::system_clock::time_point at);

}  // namespace txbox::brokers::wire
