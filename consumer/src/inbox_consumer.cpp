#include "txbox/consumer/inbox_consumer.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <pqxx/pqxx>

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

std::optional<inbox::Outcome> InboxConsumer::poll_once() {
  if (!pending_) pending_ = consumer_.poll(options_.poll_timeout);
  if (!pending_) return std::nullopt;
  const brokers::Delivery& delivery = *pending_;
  inbox::Outcome outcome;
  try {
    outcome = inbox_.process(connection(), dedup_id(delivery),
                             [&](pqxx::transaction_base& tx) { handler_(tx, delivery); });
  } catch (const pqxx::broken_connection&) {
    conn_.reset();
    ++stats_.failures;
    throw;
  } catch (...) {
    ++stats_.failures;
    throw;
  }
  // The inbox row is committed: from here a crash only causes a duplicate.
  consumer_.ack(delivery);
  pending_.reset();
  if (outcome == inbox::Outcome::processed) ++stats_.processed;
  else ++stats_.duplicates;
  return outcome;
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
