#include "txbox/consumer/inbox_consumer.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "ack_order.hpp"
#include "txbox/core/error.hpp"
#include "lane.hpp"

namespace txbox::consumer {

std::string dedup_id(const brokers::Delivery& delivery) {
  if (!delivery.message.message_id.empty()) return delivery.message.message_id;
  return fmt::format("{}/{}/{}", delivery.source, delivery.partition, delivery.offset);
}

// The single lane's settlement: straight to the broker consumer, on the
// caller's thread.
class InboxConsumer::DirectSettlement : public detail::Settlement {
 public:
  explicit DirectSettlement(brokers::Consumer& consumer) : consumer_(consumer) {}
  void ack(std::vector<brokers::Delivery> deliveries) override {
    if (!deliveries.empty()) consumer_.ack_batch(deliveries);
  }
  bool dead_letter(const brokers::Delivery& delivery, const std::string& reason) override {
    return consumer_.dead_letter(delivery, reason);
  }

 private:
  brokers::Consumer& consumer_;
};

InboxConsumer::InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox,
                             MessageHandler handler, InboxConsumerOptions options)
    : InboxConsumer(consumer, std::move(database_url), std::move(inbox), std::move(handler), {}, std::move(options)) {}

InboxConsumer::InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox,
                             BatchHandler handler, InboxConsumerOptions options)
    : InboxConsumer(consumer, std::move(database_url), std::move(inbox), {}, std::move(handler), std::move(options)) {}

InboxConsumer::InboxConsumer(brokers::Consumer& consumer, std::string database_url, inbox::Inbox inbox,
                             MessageHandler handler, BatchHandler batch_handler, InboxConsumerOptions options)
    : consumer_(consumer),
      database_url_(std::move(database_url)),
      inbox_(std::move(inbox)),
      handler_(std::move(handler)),
      batch_handler_(std::move(batch_handler)),
      options_(std::move(options)),
      settlement_(std::make_unique<DirectSettlement>(consumer)),
      lane_(std::make_unique<detail::Lane>(database_url_, inbox_, detail::Handlers{handler_, batch_handler_}, options_,
                                           *settlement_)) {}

InboxConsumer::~InboxConsumer() = default;

namespace {

// Up to `max_batch` deliveries: the first waits up to `first_wait`, the
// others only while the source has them ready (or until `max_batch_wait`).
template <typename Next>
std::vector<brokers::Delivery> collect_batch(const InboxConsumerOptions& options, const Next& next) {
  std::vector<brokers::Delivery> batch;
  auto first = next(options.poll_timeout);
  if (!first) return batch;
  batch.push_back(std::move(*first));
  const auto deadline = std::chrono::steady_clock::now() + options.max_batch_wait;
  while (static_cast<int>(batch.size()) < std::max(1, options.max_batch)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto more = next(std::max(left, std::chrono::milliseconds(0)));
    if (!more) break;  // the source has nothing more ready
    batch.push_back(std::move(*more));
  }
  return batch;
}

ConsumeStats& operator+=(ConsumeStats& sum, const ConsumeStats& s) {
  sum.processed += s.processed;
  sum.duplicates += s.duplicates;
  sum.failures += s.failures;
  sum.dead_lettered += s.dead_lettered;
  return sum;
}

}  // namespace

std::optional<Result> InboxConsumer::poll_once() {
  struct Sync {  // the lane's stats, also when it throws
    InboxConsumer& self;
    ~Sync() { self.stats_ = self.lane_->stats(); }
  } sync{*this};
  if (lane_->has_pending()) return lane_->process_pending();
  auto batch = collect_batch(options_, [&](std::chrono::milliseconds timeout) { return consumer_.poll(timeout); });
  if (batch.empty()) return std::nullopt;
  return lane_->process_batch(std::move(batch));
}

ConsumeStats InboxConsumer::run(std::stop_token stop, const std::function<bool(const ConsumeStats&)>& until) {
  if (options_.workers > 1) return run_lanes(stop, until);
  std::chrono::milliseconds delay = options_.retry_base;
  std::mutex mutex;
  std::condition_variable_any cv;
  while (!stop.stop_requested() && !(until && until(stats_))) {
    try {
      poll_once();
      delay = options_.retry_base;
    } catch (const std::exception& e) {
      spdlog::warn("consumer '{}': message {} failed, retrying in {} ms: {}", inbox_.consumer(), lane_->pending_id(),
                   delay.count(), e.what());
      std::unique_lock lock(mutex);
      cv.wait_for(lock, stop, delay, [] { return false; });
      delay = std::min(options_.retry_cap, delay * 2);
    }
  }
  return stats_;
}

namespace {

// What the dispatcher and the lanes share, under one mutex.
struct LaneBoard {
  struct DeadLetterRequest {
    const brokers::Delivery* delivery;
    const std::string* reason;
    std::promise<bool> settled;
  };
  struct Slot {
    std::deque<brokers::Delivery> queue;  // dispatched, not yet taken by the lane
    std::condition_variable wake;         // work queued, or stop
    ConsumeStats stats;                   // the lane's, as of its last batch
    bool finished = false;
  };

  explicit LaneBoard(size_t lanes) : slots(lanes) {}
  std::mutex mutex;
  std::condition_variable dispatcher_wake;  // settled deliveries, a request, room in a queue, a lane finished
  std::deque<Slot> slots;  // a deque: slots do not move
  std::vector<brokers::Delivery> settled;
  std::vector<DeadLetterRequest*> dead_letter_requests;
  bool stopping = false;
};

// A lane's settlement with several lanes: handed to the dispatcher thread,
// which owns the broker consumer.
class DispatchedSettlement : public detail::Settlement {
 public:
  explicit DispatchedSettlement(LaneBoard& board) : board_(board) {}
  void ack(std::vector<brokers::Delivery> deliveries) override {
    if (deliveries.empty()) return;
    {
      std::lock_guard lock(board_.mutex);
      std::move(deliveries.begin(), deliveries.end(), std::back_inserter(board_.settled));
    }
    board_.dispatcher_wake.notify_one();
  }
  bool dead_letter(const brokers::Delivery& delivery, const std::string& reason) override {
    LaneBoard::DeadLetterRequest request{&delivery, &reason, {}};
    auto answer = request.settled.get_future();
    {
      std::lock_guard lock(board_.mutex);
      board_.dead_letter_requests.push_back(&request);
    }
    board_.dispatcher_wake.notify_one();
    return answer.get();  // the broker's verdict, or its exception
  }

 private:
  LaneBoard& board_;
};

}  // namespace

ConsumeStats InboxConsumer::run_lanes(std::stop_token stop, const std::function<bool(const ConsumeStats&)>& until) {
  // Deliveries left in the lanes when run() returns are neither acked nor
  // delivered again by this broker consumer, and a later cumulative ack
  // (a Kafka offset) would pass over them: so lanes run once per consumer.
  if (lanes_ran_)
    throw txbox::UsageError(
        "InboxConsumer::run() with workers > 1 was called a second time: close the broker consumer and "
        "create a new one (and a new InboxConsumer), so that what the first run left unacked is delivered again");
  lanes_ran_ = true;
  const size_t lanes = static_cast<size_t>(options_.workers);
  const size_t queue_limit =
      static_cast<size_t>(options_.lane_queue > 0 ? options_.lane_queue : 2 * std::max(1, options_.max_batch));
  LaneBoard board(lanes);
  DispatchedSettlement settlement(board);

  auto lane_main = [&](size_t index) {
    LaneBoard::Slot& slot = board.slots[index];
    detail::Lane lane(database_url_, inbox_, detail::Handlers{handler_, batch_handler_}, options_, settlement);
    std::chrono::milliseconds delay = options_.retry_base;
    auto retry_at = std::chrono::steady_clock::now();
    for (;;) {
      std::vector<brokers::Delivery> batch;
      {
        std::unique_lock lock(board.mutex);
        if (lane.has_pending()) {
          slot.wake.wait_until(lock, retry_at, [&] { return board.stopping; });
        } else {
          slot.wake.wait(lock, [&] { return board.stopping || !slot.queue.empty(); });
          if (board.stopping) break;
          // What the dispatcher has queued is what is ready now; with
          // max_batch_wait the lane gives the broker that long to add more.
          if (options_.max_batch_wait.count() > 0 && !board.stopping &&
              slot.queue.size() < static_cast<size_t>(options_.max_batch))
            slot.wake.wait_for(lock, options_.max_batch_wait, [&] {
              return board.stopping || slot.queue.size() >= static_cast<size_t>(options_.max_batch);
            });
          const size_t n = std::min(slot.queue.size(), static_cast<size_t>(std::max(1, options_.max_batch)));
          std::move(slot.queue.begin(), slot.queue.begin() + static_cast<std::ptrdiff_t>(n),
                    std::back_inserter(batch));
          slot.queue.erase(slot.queue.begin(), slot.queue.begin() + static_cast<std::ptrdiff_t>(n));
        }
        // On stop: the batch in hand is finished; what is queued, and a
        // message waiting for its retry, stay unacked for redelivery.
        if (board.stopping && batch.empty()) break;
      }
      board.dispatcher_wake.notify_one();  // room in the queue
      try {
        if (!batch.empty()) lane.process_batch(std::move(batch));
        else if (lane.has_pending()) lane.process_pending();
        delay = options_.retry_base;
      } catch (const std::exception& e) {
        spdlog::warn("consumer '{}' lane {}: message {} failed, retrying in {} ms: {}", inbox_.consumer(), index,
                     lane.pending_id(), delay.count(), e.what());
        retry_at = std::chrono::steady_clock::now() + delay;
        delay = std::min(options_.retry_cap, delay * 2);
      }
      {
        std::lock_guard lock(board.mutex);
        slot.stats = lane.stats();
      }
    }
    {
      std::lock_guard lock(board.mutex);
      slot.stats = lane.stats();
      slot.finished = true;
    }
    board.dispatcher_wake.notify_one();
  };

  std::vector<std::jthread> threads;
  for (size_t i = 0; i < lanes; ++i)
    threads.emplace_back([&, i] {
      try {
        lane_main(i);
      } catch (...) {  // nothing but the lane's own code above: never expected
        spdlog::critical("consumer '{}' lane {}: stopped by an unexpected error", inbox_.consumer(), i);
        std::lock_guard lock(board.mutex);
        board.slots[i].finished = true;
        board.dispatcher_wake.notify_one();
      }
    });

  detail::AckOrder order;
  std::chrono::milliseconds poll_delay = options_.retry_base;
  // Acks what the lanes settled, in order, and does their broker-side
  // dead-lettering; on this thread, which owns the broker consumer.
  auto serve_lanes = [&] {
    std::vector<brokers::Delivery> settled;
    std::vector<LaneBoard::DeadLetterRequest*> requests;
    {
      std::lock_guard lock(board.mutex);
      settled.swap(board.settled);
      requests.swap(board.dead_letter_requests);
    }
    for (auto* request : requests) {
      try {
        const bool done = consumer_.dead_letter(*request->delivery, *request->reason);
        if (done) order.settle(*request->delivery);
        request->settled.set_value(done);
      } catch (...) {
        request->settled.set_exception(std::current_exception());
      }
    }
    for (auto& d : settled) order.settle(std::move(d));
    auto ready = order.take_ready();
    if (ready.empty()) return;
    try {
      consumer_.ack_batch(ready);
    } catch (const std::exception& e) {
      // Committed in the inbox: redelivered, they are duplicates.
      spdlog::warn("consumer '{}': acknowledging {} messages failed; they will be delivered again and skipped as "
                   "duplicates: {}",
                   inbox_.consumer(), ready.size(), e.what());
    }
  };
  auto summed_stats = [&] {
    ConsumeStats sum;
    std::lock_guard lock(board.mutex);
    for (const auto& slot : board.slots) sum += slot.stats;
    return sum;
  };
  std::hash<std::string> hash;

  while (!stop.stop_requested()) {
    serve_lanes();
    stats_ = summed_stats();
    if (until && until(stats_)) break;
    {
      // Backpressure: while a lane's queue is full, read nothing more.
      std::unique_lock lock(board.mutex);
      auto full = [&] {
        return std::any_of(board.slots.begin(), board.slots.end(),
                           [&](const LaneBoard::Slot& s) { return s.queue.size() >= queue_limit; });
      };
      if (full()) {
        board.dispatcher_wake.wait_for(lock, std::chrono::milliseconds(50));
        continue;
      }
    }
    // With work in the lanes, come back soon to ack what they settle.
    const auto timeout =
        order.outstanding() > 0 ? std::min(options_.poll_timeout, std::chrono::milliseconds(5)) : options_.poll_timeout;
    std::optional<brokers::Delivery> delivery;
    try {
      delivery = consumer_.poll(timeout);
      poll_delay = options_.retry_base;
    } catch (const std::exception& e) {
      spdlog::warn("consumer '{}': reading from the broker failed, retrying in {} ms: {}", inbox_.consumer(),
                   poll_delay.count(), e.what());
      std::unique_lock lock(board.mutex);
      board.dispatcher_wake.wait_for(lock, poll_delay);
      poll_delay = std::min(options_.retry_cap, poll_delay * 2);
      continue;
    }
    if (!delivery) continue;
    order.add(*delivery);
    const auto& key = delivery->message.key;
    const size_t lane = hash(key ? *key : dedup_id(*delivery)) % lanes;
    LaneBoard::Slot& slot = board.slots[lane];
    bool wake;
    {
      std::lock_guard lock(board.mutex);
      slot.queue.push_back(std::move(*delivery));
      // The lane waits for a first delivery, or (max_batch_wait) a full batch.
      wake = slot.queue.size() == 1 || slot.queue.size() >= static_cast<size_t>(options_.max_batch);
    }
    if (wake) slot.wake.notify_one();
  }

  {
    std::lock_guard lock(board.mutex);
    board.stopping = true;
  }
  for (auto& slot : board.slots) slot.wake.notify_one();
  // The lanes finish their batches in hand; their acks and dead letters
  // still go through here.
  for (;;) {
    serve_lanes();
    std::unique_lock lock(board.mutex);
    if (std::all_of(board.slots.begin(), board.slots.end(), [](const auto& s) { return s.finished; })) break;
    board.dispatcher_wake.wait_for(lock, std::chrono::milliseconds(50));
  }
  threads.clear();  // joined
  serve_lanes();
  stats_ = summed_stats();
  return stats_;
}

}  // namespace txbox::consumer
