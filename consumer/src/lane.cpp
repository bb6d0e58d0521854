#include "lane.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <pqxx/pqxx>
#include <set>

#include "txbox/brokers/wire.hpp"

namespace txbox::consumer::detail {

Lane::Lane(std::string database_url, inbox::Inbox inbox, Handlers handlers, const InboxConsumerOptions& options,
           Settlement& settlement)
    : database_url_(std::move(database_url)),
      inbox_(std::move(inbox)),
      handlers_(std::move(handlers)),
      options_(options),
      settlement_(settlement) {}

pqxx::connection& Lane::connection() {
  if (!conn_ || !conn_->is_open()) conn_ = std::make_unique<pqxx::connection>(database_url_);
  return *conn_;
}

std::string Lane::pending_id() const { return pending_.empty() ? std::string("?") : dedup_id(pending_.front().delivery); }

namespace {
using PartitionKey = std::pair<std::string, int32_t>;

// SAVEPOINT ... RELEASE, or ROLLBACK TO when the work throws. Written out
// rather than pqxx::subtransaction: libpqxx 6.4 issues a subtransaction's
// SAVEPOINT lazily and exec_params() does not trigger it, so a handler's
// parameterised statements would not be rolled back.
template <typename Work>
void in_savepoint(pqxx::transaction_base& tx, const Work& work) {
  tx.exec0("SAVEPOINT txbox_handler");
  try {
    work();
  } catch (...) {
    tx.exec0("ROLLBACK TO SAVEPOINT txbox_handler");
    throw;
  }
  tx.exec0("RELEASE SAVEPOINT txbox_handler");
}
PartitionKey partition_of(const brokers::Delivery& d) { return {d.source, d.partition}; }
}  // namespace

std::optional<Result> Lane::process_batch(std::vector<brokers::Delivery> batch) {
  const size_t n = batch.size();
  std::vector<std::string> ids;
  for (const auto& d : batch) ids.push_back(dedup_id(d));
  // Handled later, one at a time: a message whose handler threw, and the
  // later messages of its key.
  std::vector<bool> later(n, false), tried(n, false), fresh;
  std::vector<std::optional<std::string>> give_up(n);
  size_t fresh_count = 0, failed = 0;
  try {
    pqxx::work tx(connection(), "txbox_inbox_batch");
    fresh = inbox_.claim(tx, ids);
    std::vector<size_t> todo;
    for (size_t i = 0; i < n; ++i)
      if (fresh[i]) todo.push_back(i);
    fresh_count = todo.size();
    // Optimistically every new message under one savepoint (two round
    // trips a batch); only when a handler throws is the batch run again
    // with a savepoint per message, to roll back just the failing ones.
    bool done = todo.empty();
    if (todo.size() > 1) {
      try {
        in_savepoint(tx, [&] {
          if (handlers_.batch && todo.size() == n) {
            handlers_.batch(tx, batch);  // no duplicates: the batch as it came
          } else if (handlers_.batch) {
            std::vector<brokers::Delivery> fresh_deliveries;
            for (size_t i : todo) fresh_deliveries.push_back(batch[i]);
            handlers_.batch(tx, fresh_deliveries);
          } else {
            for (size_t i : todo) handlers_.message(tx, batch[i]);
          }
        });
        done = true;
      } catch (const pqxx::broken_connection&) {
        throw;
      } catch (const std::exception& e) {
        if (todo.size() > 1)
          spdlog::warn("consumer '{}': a batch of {} messages failed, running them one at a time: {}",
                       inbox_.consumer(), todo.size(), e.what());
      }
    }
    std::set<std::string> blocked_keys;
    for (size_t i : done ? std::vector<size_t>{} : todo) {
      const auto& d = batch[i];
      if (d.message.key && blocked_keys.contains(*d.message.key)) {
        later[i] = true;
        continue;
      }
      try {
        in_savepoint(tx, [&] {
          if (handlers_.message) handlers_.message(tx, d);
          else handlers_.batch(tx, std::span(&d, 1));
        });
      } catch (const pqxx::broken_connection&) {
        throw;
      } catch (const std::exception& e) {
        spdlog::warn("consumer '{}': message {} failed, retrying it alone: {}", inbox_.consumer(), ids[i], e.what());
        later[i] = true;
        tried[i] = true;
        // No retry can fix it: dead-lettered without running again.
        if (dynamic_cast<const PermanentError*>(&e)) give_up[i] = e.what();
        ++failed;
        if (d.message.key) blocked_keys.insert(*d.message.key);
      }
    }
    std::vector<std::string> released;
    for (size_t i = 0; i < n; ++i)
      if (later[i]) released.push_back(ids[i]);
    inbox_.release(tx, released);
    tx.commit();
  } catch (const std::exception&) {
    // The database failed, not a message: the whole batch waits for its
    // retry, one message at a time, without counting attempts.
    conn_.reset();
    for (auto& d : batch) {
      const int earlier = std::max(0, d.delivery_attempt - 1);
      pending_.push_back({std::move(d), earlier, std::nullopt});
    }
    ++stats_.failures;
    throw;
  }
  // Committed: from here a crash only causes duplicates. Acks of a
  // partition stop before its first message handled later.
  std::map<PartitionKey, int64_t> first_later;
  for (size_t i = 0; i < n; ++i)
    if (later[i]) {
      auto [it, inserted] = first_later.emplace(partition_of(batch[i]), batch[i].offset);
      if (!inserted) it->second = std::min(it->second, batch[i].offset);
    }
  std::vector<brokers::Delivery> ack_now;
  std::optional<Result> last;
  for (size_t i = 0; i < n; ++i) {
    if (later[i]) continue;
    auto held = first_later.find(partition_of(batch[i]));
    last = fresh[i] ? Result::processed : Result::duplicate;
    // Each delivery ends in exactly one place (acked now, held, or pending):
    // moved, not copied, on this hot path.
    if (held != first_later.end() && batch[i].offset > held->second) held_acks_.push_back(std::move(batch[i]));
    else ack_now.push_back(std::move(batch[i]));
  }
  stats_.processed += fresh_count - std::count(later.begin(), later.end(), true);
  stats_.duplicates += n - fresh_count;
  stats_.failures += failed;
  for (size_t i = 0; i < n; ++i)
    if (later[i]) {
      // The batch's failed attempt counts; a message that only waited behind
      // its key's failure has not been tried yet.
      const int earlier = std::max(0, batch[i].delivery_attempt - 1);
      pending_.push_back({std::move(batch[i]), earlier + (tried[i] ? 1 : 0), give_up[i]});
    }
  settlement_.ack(std::move(ack_now));
  // Every message was set aside: go on with the first, so that nullopt
  // keeps meaning "nothing came".
  if (!last) return process_pending();
  return last;
}

std::optional<Result> Lane::process_pending() {
  Pending& pending = pending_.front();
  const brokers::Delivery& delivery = pending.delivery;
  inbox::Outcome outcome;
  try {
    if (pending.permanent_error) throw PermanentError(*pending.permanent_error);
    ++pending.attempts;
    outcome = inbox_.process(connection(), dedup_id(delivery), [&](pqxx::transaction_base& tx) {
      if (handlers_.message) handlers_.message(tx, delivery);
      else handlers_.batch(tx, std::span(&delivery, 1));
    });
  } catch (const pqxx::broken_connection&) {
    // The database, not the message, failed: retried without counting.
    conn_.reset();
    --pending.attempts;
    ++stats_.failures;
    throw;
  } catch (const std::exception& e) {
    // A permanent error from the batch was counted there.
    if (!pending.permanent_error) ++stats_.failures;
    bool permanent = dynamic_cast<const PermanentError*>(&e) != nullptr;
    if (permanent || pending.attempts >= options_.max_attempts) {
      // The broker's own dead-letter mechanism first; else "<source>.dlq".
      // The adapters write the handler attempts made as dlq-attempts.
      brokers::Delivery attempted = delivery;
      attempted.delivery_attempt = pending.attempts;
      bool settled = settlement_.dead_letter(attempted, e.what());
      if (!settled && options_.dead_letter_publisher && publish_dead_letter(pending, e.what())) {
        settlement_.ack({delivery});
        settled = true;
      }
      if (settled) {
        settle_pending_front();
        ++stats_.dead_lettered;
        return Result::dead_lettered;
      }
    }
    throw;
  }
  // The inbox row is committed: from here a crash only causes a duplicate.
  settlement_.ack({delivery});
  settle_pending_front();
  if (outcome == inbox::Outcome::processed) {
    ++stats_.processed;
    return Result::processed;
  }
  ++stats_.duplicates;
  return Result::duplicate;
}

void Lane::settle_pending_front() {
  pending_.pop_front();
  if (!pending_.empty() || held_acks_.empty()) return;
  // Nothing of theirs is unsettled any more.
  settlement_.ack(std::move(held_acks_));
  held_acks_.clear();
}

bool Lane::publish_dead_letter(const Pending& pending, const std::string& error) {
  const brokers::Delivery& delivery = pending.delivery;
  brokers::Message letter = delivery.message;
  letter.destination = delivery.source + ".dlq";
  brokers::wire::add_dead_letter_headers(
      letter.headers,
      {.error = error,
       .error_class = std::string(brokers::wire::kClassHandler),
       .attempts = pending.attempts,
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
                pending.attempts, error);
  return true;
}

}  // namespace txbox::consumer::detail
