#include "txbox/consumer/inbox_consumer.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <pqxx/pqxx>

#include "txbox/brokers/wire.hpp"

namespace txbox::consumer {

std::string dedup_id(const brokers::Delivery& delivery) {
  if (!delivery.message.message_id.empty()) return delivery.message.message_id;
  return fmt::format("{}/{}/{}", delivery.source, delivery.partition, delivery.offset);
}

InboxConsumer::InboxConsumer(brokers::Consumer& consumer, std::string database_url,
                             inbox::Inbox inbox, MessageHandler handler,
                             InboxConsumerOptions options)
    : consumer_(consumer),
      database_url_(std::move(database_url)),
      inbox_(std::move(inbox)),
      handler_(std::move(handler)),
      options_(options) {}

InboxConsumer::~InboxConsumer() = default;

pqxx::connection& InboxConsumer::connection() {
  if (!conn_ || !conn_->is_open()) conn_ = std::make_unique<pqxx::connection>(database_url_);
  return *conn_;
}

std::optional<Result> InboxConsumer::poll_once() {
  if (!pending_) {
    pending_ = consumer_.poll(options_.poll_timeout);
    // Earlier deliveries (to crashed consumers) count as attempts too.
    pending_attempts_ = pending_ ? std::max(0, pending_->delivery_attempt - 1) : 0;
  }
  if (!pending_) return std::nullopt;
  const brokers::Delivery& delivery = *pending_;
  inbox::Outcome outcome;
  try {
    ++pending_attempts_;
    outcome = inbox_.process(connection(), dedup_id(delivery),
                             [&](pqxx::transaction_base& tx) { handler_(tx, delivery); });
  } catch (const pqxx::broken_connection&) {
    // The database, not the message, failed: retried without counting.
    conn_.reset();
    --pending_attempts_;
    ++stats_.failures;
    throw;
  } catch (const std::exception& e) {
    ++stats_.failures;
    bool permanent = dynamic_cast<const PermanentError*>(&e) != nullptr;
    if (permanent || pending_attempts_ >= options_.max_attempts) {
      // The broker's own dead-letter mechanism first; else "<source>.dlq".
      // The adapters write the handler attempts made as dlq-attempts.
      brokers::Delivery attempted = delivery;
      attempted.delivery_attempt = pending_attempts_;
      bool settled = consumer_.dead_letter(attempted, e.what());
      if (!settled && options_.dead_letter_publisher && dead_letter(delivery, e.what())) {
        consumer_.ack(delivery);
        settled = true;
      }
      if (settled) {
        pending_.reset();
        ++stats_.dead_lettered;
        return Result::dead_lettered;
      }
    }
    throw;
  }
  // The inbox row is committed: from here a crash only causes a duplicate.
  consumer_.ack(delivery);
  pending_.reset();
  if (outcome == inbox::Outcome::processed) {
    ++stats_.processed;
    return Result::processed;
  }
  ++stats_.duplicates;
  return Result::duplicate;
}

bool InboxConsumer::dead_letter(const brokers::Delivery& delivery, const std::string& error) {
  brokers::Message letter = delivery.message;
  letter.destination = delivery.source + ".dlq";
  brokers::wire::add_dead_letter_headers(
      letter.headers,
      {.error = error,
       .error_class = std::string(brokers::wire::kClassHandler),
       .attempts = pending_attempts_,
       .original_destination = delivery.source,
       .original_position = fmt::format("{}/{}", delivery.partition, delivery.offset)});
  auto results = options_.dead_letter_publisher->publish(std::span(&letter, 1), options_.dead_letter_timeout);
  if (results.empty() || !results[0].confirmed) {
    spdlog::error("consumer '{}': could not publish message {} to {}: {}; it stays unacked and is retried",
                  inbox_.consumer(), dedup_id(delivery), letter.destination,
                  results.empty() ? "no result" : results[0].error);
    return false;
  }
  spdlog::error("consumer '{}': message {} from {}[{}]@{} sent to {} after {} attempt(s): {}", inbox_.consumer(),
                dedup_id(delivery), delivery.source, delivery.partition, delivery.offset, letter.destination,
                pending_attempts_, error);
  return true;
}

ConsumeStats InboxConsumer::run(std::stop_token stop,
                                const std::function<bool(const ConsumeStats&)>& until) {
  std::chrono::milliseconds delay = options_.retry_base;
  std::mutex mutex;
  std::condition_variable_any cv;
  while (!stop.stop_requested() && !(until && until(stats_))) {
    try {
      poll_once();
      delay = options_.retry_base;
    } catch (const std::exception& e) {
      spdlog::warn("consumer '{}': message {} failed, retrying in {} ms: {}", inbox_.consumer(),
                   pending_ ? dedup_id(*pending_) : std::string("?"), delay.count(), e.what());
      std::unique_lock lock(mutex);
      cv.wait_for(lock, stop, delay, [] { return false; });
      delay = std::min(options_.retry_cap, delay * 2);
    }
  }
  return stats_;
}

}  // namespace txbox::consumer
