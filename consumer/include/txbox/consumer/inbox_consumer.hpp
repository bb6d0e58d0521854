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
#include <stop_token>
#include <string>

#include "txbox/brokers/broker.hpp"
#include "txbox/inbox/inbox.hpp"

#include <pqxx/connection>

namespace txbox::consumer {

// Runs inside the inbox transaction; must not commit it. Throw to reject the
// message: its writes and its inbox row roll back and it is tried again.
using MessageHandler =
    std::function<void(pqxx::transaction_base& tx, const brokers::Delivery& delivery)>;

struct InboxConsumerOptions {
  std::chrono::milliseconds poll_timeout{200};
  // Delay between attempts of a message whose handler threw.
  std::chrono::milliseconds retry_base{200};
  std::chrono::milliseconds retry_cap{std::chrono::seconds(10)};
};

struct ConsumeStats {
  uint64_t processed = 0;   // handler ran and committed
  uint64_t duplicates = 0;  // redeliveries skipped by the inbox
  uint64_t failures = 0;    // handler attempts that threw
};

class InboxConsumer {
 public:
  InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox,
                MessageHandler handler, InboxConsumerOptions options = {});
  ~InboxConsumer();

  // Processes at most one message: the one whose handler failed last time,
  // else the next one from the broker. Returns nullopt when no message came
  // within the poll timeout. A handler exception propagates after the
  // rollback; the message stays pending and is retried by the next call.
  std::optional<inbox::Outcome> poll_once();

  // Loops over poll_once until `stop` is requested or `until` returns true
  // (checked after every poll), retrying failed messages with backoff.
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
  std::optional<brokers::Delivery> pending_;
  ConsumeStats stats_;
};

// The id the inbox deduplicates on: the message id, or for a message sent
// without one, "<source>/<partition>/<offset>".
std::string dedup_id(const brokers::Delivery& delivery);

}  // namespace txbox::consumer
