#pragma once
// txbox::consumer — feeds a broker consumer's messages through the inbox.
//
// Batches: take up to `max_batch` deliveries (the batch closes as soon as
// the broker has nothing more ready, or after `max_batch_wait`), find the
// duplicates among them with one statement, run the handler for the new ones
// in ONE transaction with a savepoint per message, commit once, and only
// then acknowledge the batch in the broker's bulk form (for Kafka: commit
// the offsets). A crash between the commit and the acks means redeliveries,
// which the inbox reports as duplicates and acks without running the
// handler again.
//
// The batch runs under one savepoint; when a handler throws, the batch's
// work is rolled back and run again with a savepoint per message (so a
// handler may run more than once for one commit: keep effects outside the
// transaction idempotent, as they must be anyway). A handler that throws
// then rolls back only its own message; that message and
// the later messages of its key in the batch (so a key's effects keep their
// order) are then retried one at a time with backoff, and dead-lettered
// after max_attempts, as before batching. Acks of a partition wait until
// its earlier messages are settled.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>
#include <stdexcept>
#include <stop_token>
#include <string>

#include "txbox/brokers/broker.hpp"
#include "txbox/inbox/inbox.hpp"

#include <pqxx/connection>

namespace txbox::consumer {
namespace detail {
class Lane;
}

// Runs inside the inbox transaction; must not commit it. Throw to reject the
// message: its writes and its inbox row roll back and it is tried again
// (throw PermanentError to send it to the dead-letter topic at once).
using MessageHandler =
    std::function<void(pqxx::transaction_base& tx, const brokers::Delivery& delivery)>;

// For set-based work: the new (not duplicate) deliveries of a batch, in
// broker order, in one call inside the batch's transaction. If it throws,
// the batch's work rolls back and each message is run alone (a batch of one,
// in its own savepoint) to find the one that fails.
using BatchHandler = std::function<void(pqxx::transaction_base& tx, std::span<const brokers::Delivery> deliveries)>;

// A handler error that retrying cannot fix (malformed payload, unknown
// event type): the message goes to the dead-letter topic without retries.
class PermanentError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct InboxConsumerOptions {
  std::chrono::milliseconds poll_timeout{200};
  // Deliveries handled in one database transaction and acknowledged
  // together. 1 = one transaction and one ack per message.
  int max_batch = 100;
  // How long a batch may wait for more deliveries after its first; 0 = only
  // what the broker has ready, so batching adds no waiting at low load.
  std::chrono::milliseconds max_batch_wait{0};
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
  // Lanes that apply messages in parallel (run() only; poll_once() is one
  // lane). A delivery goes to the lane its key hashes to (a message without
  // a key: its id), so a key's messages are applied one after the other in
  // the order the broker delivered them, different keys in parallel. Each
  // lane has its own thread and database connection; the handler must then
  // be safe to call from several threads at once. Acks stay in broker
  // order per partition: an offset is committed only when every earlier
  // message of its partition is settled, whichever lane had it.
  int workers = 1;
  // Deliveries queued per lane before the consumer stops reading from the
  // broker (0 = 2 x max_batch).
  int lane_queue = 0;
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
  InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox,
                BatchHandler handler, InboxConsumerOptions options = {});
  ~InboxConsumer();

  // Processes the message whose handler failed last time (and the others
  // waiting behind it), one per call; else the next batch from the broker.
  // Returns the outcome of the last message handled, nullopt when none came
  // within the poll timeout. A handler exception of a retried message
  // propagates after the rollback and the message stays pending for the
  // next call, unless it was permanent or the last allowed attempt: then the
  // message is published to the dead-letter topic and acked. Acks (offset
  // commits) happen only after the inbox transaction or the dead-letter
  // publish succeeded.
  std::optional<Result> poll_once();

  // Loops over poll_once until `stop` is requested or `until` returns true
  // (checked after every poll), retrying failed messages with backoff. On
  // stop the message in hand is finished (committed and acked) first;
  // a message waiting for its retry is left unacked for redelivery.
  // With `workers` > 1: a dispatcher on this thread reads the broker and
  // acks, the lanes' threads handle; `until` gets the lanes' stats summed,
  // and on stop each lane finishes its batch in hand, and what was queued
  // behind it is left unacked for redelivery (by a new broker consumer: with
  // workers > 1, run() may be called once per InboxConsumer).
  ConsumeStats run(std::stop_token stop, const std::function<bool(const ConsumeStats&)>& until = {});

  const ConsumeStats& stats() const noexcept { return stats_; }

 private:
  class DirectSettlement;
  // One of the two handlers is set.
  InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox, MessageHandler handler,
                BatchHandler batch_handler, InboxConsumerOptions options);
  ConsumeStats run_lanes(std::stop_token stop, const std::function<bool(const ConsumeStats&)>& until);

  brokers::Consumer& consumer_;
  std::string database_url_;
  inbox::Inbox inbox_;
  MessageHandler handler_;
  BatchHandler batch_handler_;
  InboxConsumerOptions options_;
  // The lane poll_once() drives (and run() with workers = 1).
  std::unique_ptr<DirectSettlement> settlement_;
  std::unique_ptr<detail::Lane> lane_;
  bool lanes_ran_ = false;
  ConsumeStats stats_;
};

// The id the inbox deduplicates on: the message id, or for a message sent
// without one, "<source>/<partition>/<offset>".
std::string dedup_id(const brokers::Delivery& delivery);

}  // namespace txbox::consumer
