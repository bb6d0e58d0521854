#pragma once
// One lane of an InboxConsumer: its own database connection, the batch
// transaction, and the messages it retries one at a time. A consumer with
// `workers = 1` is one lane driven by the caller's thread; with more, each
// lane has a thread and a dispatcher feeds it the keys that hash to it.

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "txbox/consumer/inbox_consumer.hpp"

namespace txbox::consumer::detail {

// Where a lane hands what it has settled. The single-lane consumer calls the
// broker consumer directly; with several lanes the dispatcher thread does
// (broker clients are not thread-safe) and keeps a partition's acks in order.
class Settlement {
 public:
  virtual ~Settlement() = default;
  // Deliveries whose inbox rows are committed (or that were dead-lettered
  // through a publisher): acknowledge them.
  virtual void ack(std::vector<brokers::Delivery> deliveries) = 0;
  // The broker's own dead-lettering (brokers::Consumer::dead_letter).
  virtual bool dead_letter(const brokers::Delivery& delivery, const std::string& reason) = 0;
};

struct Handlers {
  MessageHandler message;  // one of the two is set
  BatchHandler batch;
};

class Lane {
 public:
  Lane(std::string database_url, inbox::Inbox inbox, Handlers handlers, const InboxConsumerOptions& options,
       Settlement& settlement);

  bool has_pending() const noexcept { return !pending_.empty(); }
  // The id of the message retried next (for log lines), "?" when none.
  std::string pending_id() const;

  // See InboxConsumer::poll_once: the batch's duplicates skipped, the rest
  // handled in one transaction, committed, then acked.
  std::optional<Result> process_batch(std::vector<brokers::Delivery> batch);
  // The next message waiting for its retry, alone in its transaction.
  std::optional<Result> process_pending();

  const ConsumeStats& stats() const noexcept { return stats_; }

 private:
  struct Pending {
    brokers::Delivery delivery;
    int attempts = 0;  // handler attempts so far, earlier deliveries included
    // Set when the handler threw PermanentError in the batch: dead-letter
    // without running it again.
    std::optional<std::string> permanent_error;
  };

  pqxx::connection& connection();
  void settle_pending_front();
  bool publish_dead_letter(const Pending& pending, const std::string& error);

  std::string database_url_;
  inbox::Inbox inbox_;
  Handlers handlers_;
  const InboxConsumerOptions& options_;
  Settlement& settlement_;
  std::unique_ptr<pqxx::connection> conn_;
  // Messages to handle one at a time, in order, before the next batch.
  std::deque<Pending> pending_;
  // Committed deliveries whose ack waits for an earlier pending message of
  // their partition.
  std::vector<brokers::Delivery> held_acks_;
  ConsumeStats stats_;
};

}  // namespace txbox::consumer::detail
