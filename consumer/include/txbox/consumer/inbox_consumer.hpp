#pragma once
// txbox::consumer — feeds a broker consumer's messages through the inbox.
//
// For each message: open a transaction, record the message id in the inbox,
// run the handler in that transaction, commit, and only then ack the message
// to the broker (for Kafka: commit the offset). A crash between the commit
// and the ack means a redelivery, which the inbox reports as a duplicate and
// acks without running the handler again.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>

#include "txbox/brokers/broker.hpp"
#include "txbox/inbox/inbox.hpp"

#include <pqxx/connection>

namespace txbox::consumer {

// Runs inside the inbox transaction; must not commit it. Throw to reject the
// message: its writes and its inbox row roll back and it is tried again
// (throw PermanentError to send it to the dead-letter topic at once).
using MessageHandler =
    std::function<void(pqxx::transaction_base& tx, const brokers::Delivery& delivery)>;

// A handler error that retrying cannot fix (malformed payload, unknown
// event type): the message goes to the dead-letter topic without retries.
class PermanentError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct InboxConsumerOptions {
  std::chrono::milliseconds poll_timeout{200};
  // Delay between attempts of a message whose handler threw: exponential
  // from retry_base up to retry_cap.
  std::chrono::milliseconds retry_base{200};
  std::chrono::milliseconds retry_cap{std::chrono::seconds(10)};
  // Handler attempts before the message goes to "<source>.dlq".
  int max_attempts = 5;
  // Where dead letters are published when the broker has no dead-letter
  // mechanism of its own (Kafka), with the dead-letter headers of
  // docs/wire-format.md (dlq-error, dlq-error-class "handler", dlq-attempts,
  // dlq-original-destination = topic, dlq-original-position =
  // "partition/offset", dlq-timestamp). Without one, a failing message is
  // retried forever (never dropped) and the consumer logs it at every
  // backoff.
  std::shared_ptr<brokers::Publisher> dead_letter_publisher;
  std::chrono::milliseconds dead_letter_timeout{std::chrono::seconds(30)};
};

struct ConsumeStats {
  uint64_t processed = 0;      // handler ran and committed
  uint64_t duplicates = 0;     // redeliveries skipped by the inbox
  uint64_t failures = 0;       // handler attempts that threw
  uint64_t dead_lettered = 0;  // messages sent to the dead-letter topic
};

enum class Result {
  processed,      // handler committed, message acked
  duplicate,      // seen before: acked without running the handler
  dead_lettered,  // published to the dead-letter topic, then acked
};

class InboxConsumer {
 public:
  InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox,
                MessageHandler handler, InboxConsumerOptions options = {});
  ~InboxConsumer();

  // Processes at most one message: the one whose handler failed last time,
  // else the next one from the broker. Returns nullopt when no message came
  // within the poll timeout. A handler exception propagates after the
  // rollback and the message stays pending for the next call, unless it was
  // permanent or the last allowed attempt: then the message is published to
  // the dead-letter topic and acked. The ack (offset commit) happens only
  // after the inbox transaction or the dead-letter publish succeeded.
  std::optional<Result> poll_once();

  // Loops over poll_once until `stop` is requested or `until` returns true
  // (checked after every poll), retrying failed messages with backoff. On
  // stop the message in hand is finished (committed and acked) first;
  // a message waiting for its retry is left unacked for redelivery.
  ConsumeStats run(std::stop_token stop, const std::function<bool(const ConsumeStats&)>& until = {});

  const ConsumeStats& stats() const noexcept { return stats_; }

 private:
  pqxx::connection& connection();

  brokers::Consumer& consumer_;
  std::string database_url_;
  inbox::Inbox inbox_;
  MessageHandler handler_;
  InboxConsumerOptions options_;
  std::unique_ptr<pqxx::connection> conn_;
  bool dead_letter(const brokers::Delivery& delivery, const std::string& error);

  std::optional<brokers::Delivery> pending_;
  int pending_attempts_ = 0;
  ConsumeStats stats_;
};

// The id the inbox deduplicates on: the message id, or for a message sent
// without one, "<source>/<partition>/<offset>".
std::string dedup_id(const brokers::Delivery& delivery);

}  // namespace txbox::consumer
