// Kafka publisher: one idempotent librdkafka producer shared by every relay
// worker thread, with start() handing a batch to librdkafka and returning at
// once, and PendingPublish::wait() collecting the delivery reports. A
// dedicated poller thread serves the delivery reports and routes them,
// through the per-message opaque (InFlightCopy), to every batch waiting for
// that message.
//
// Order ("no gaps"): a later message of a key must never be stored after an
// earlier one failed. librdkafka keeps per-partition order with the
// idempotent producer and retries by itself; what remains is made safe here:
//  - message.timeout.ms=0: librdkafka never drops a queued message; a
//    publish deadline only stops the waiting, the message stays in its place;
//  - a re-published message that is still queued is not produced again (a
//    second copy would go behind later messages): the batch attaches to the
//    delivery report of the queued copy;
//  - enable.gapless.guarantee=true: a MessageSet the broker rejects stops the
//    producer (fatal) instead of letting later MessageSets of its partition
//    go on; the producer is then recreated;
//  - when the producer loses messages in bulk while later ones may follow (a
//    fatal error replaced it, or produce() failed transiently, e.g. a full
//    queue), the rest of the batch being handed over is not sent, and a
//    barrier refuses new batches until every batch started before that
//    moment has been waited for or abandoned: the caller has seen those
//    failures before anything can overtake them.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "errors.hpp"
#include "handles.hpp"
#include "order_barrier.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/kafka/kafka.hpp"

namespace txbox::kafka {

namespace {

using namespace detail;
using brokers::ErrorClass;
using brokers::Message;
using brokers::PublishResult;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// At shutdown, a short grace for delivery reports already on their way;
// whatever is still queued stays in the outbox and is published again.
constexpr milliseconds kShutdownFlush{2000};
constexpr milliseconds kRetireDrain{10000};
constexpr milliseconds kPollInterval{100};
constexpr milliseconds kRecreateBackoff{1000};

struct BatchState;

// One batch waiting for the outcome of a copy: message `index` of `batch`.
struct Waiter {
  std::shared_ptr<BatchState> batch;
  std::size_t index = 0;
};

// One copy of a message handed to librdkafka, passed as the message opaque.
// librdkafka owns it from a successful produce until the delivery report;
// the callback then settles it and deletes it. Its waiters are the batch
// that produced it and any later batch that carried the same message again
// while it was still queued.
struct InFlightCopy {
  std::string message_id;
  std::uint64_t fingerprint = 0;
  std::string topic;
  std::size_t bytes = 0;
  std::uint64_t generation = 0;  // which librdkafka producer holds it
  std::vector<Waiter> waiters;   // guarded by Core::mutex
};

// Shared by one PendingPublish and the copies its messages wait for (the
// copies keep it alive, so a late delivery report never touches freed
// memory). Everything but `sequence` and `done_cv` is guarded by Core::mutex.
struct BatchState {
  explicit BatchState(std::size_t size) : results(size), copies(size, nullptr) {}
  std::uint64_t sequence = 0;  // 0: never registered (empty or refused batch)
  std::condition_variable done_cv;
  std::vector<PublishResult> results;
  std::vector<InFlightCopy*> copies;  // the copy message i still waits for, or nullptr
  std::size_t pending = 0;
  bool resolved = false;  // wait() returned or the PendingPublish was destroyed
};

// State shared by the publisher, its PendingPublish objects (which may
// outlive it) and the librdkafka callbacks (opaque).
class Core {
 public:
  explicit Core(milliseconds message_timeout) : message_timeout(message_timeout) {}

  // Gives every batch still waiting for `copy` its result, forgets the copy
  // and deletes it.
  void settle(InFlightCopy* copy, const PublishResult& result) {
    {
      std::lock_guard lock(mutex);
      if (auto it = in_flight.find(copy->message_id); it != in_flight.end() && it->second == copy) {
        in_flight.erase(it);
      }
      for (const Waiter& waiter : copy->waiters) {
        BatchState& batch = *waiter.batch;
        if (batch.copies[waiter.index] != copy) {
          continue;
        }
        batch.results[waiter.index] = result;
        batch.copies[waiter.index] = nullptr;
        if (--batch.pending == 0) {
          batch.done_cv.notify_all();
        }
      }
    }
    delete copy;
  }

  // The producer lost messages in bulk (replaced after a fatal error, or
  // produce() failed transiently) while later ones could still be stored:
  // stop the batches being handed over and refuse new batches until every
  // batch started so far is settled.
  void note_loss(std::string reason) {
    std::lock_guard lock(mutex);
    barrier.note_loss(std::move(reason));
    losses.fetch_add(1);
  }

  // The batch is done with (wait() returned or it was abandoned): detach it
  // from the copies it still waits for. Caller holds `mutex`.
  void resolve_locked(BatchState& batch) {
    if (batch.resolved) {
      return;
    }
    batch.resolved = true;
    for (std::size_t i = 0; i < batch.copies.size(); ++i) {
      InFlightCopy* copy = batch.copies[i];
      if (copy == nullptr) {
        continue;
      }
      std::erase_if(copy->waiters,
                    [&](const Waiter& w) { return w.batch.get() == &batch && w.index == i; });
      batch.copies[i] = nullptr;
    }
    batch.pending = 0;
    if (batch.sequence != 0) {
      barrier.settle_batch(batch.sequence);
    }
  }

  void set_all_brokers_down(bool down, std::string_view why) noexcept {
    try {
      if (all_brokers_down.exchange(down) == down) {
        return;
      }
      if (down) {
        spdlog::warn(
            "Kafka publisher: {}; messages stay queued in the producer in their place and go out "
            "when a broker is back",
            why);
      } else {
        spdlog::info("Kafka publisher: brokers reachable again");
      }
    } catch (...) {
    }
  }

  std::mutex mutex;
  // Message id -> the newest copy of it still in librdkafka.
  std::unordered_map<std::string, InFlightCopy*> in_flight;
  OrderBarrier barrier;
  std::atomic<std::uint64_t> losses{0};  // note_loss() calls so far
  std::atomic<std::size_t> purged{0};    // delivery reports with ERR__PURGE_*, for the log

  std::atomic<bool> all_brokers_down{false};
  std::atomic<rd_kafka_t*> current_rk{nullptr};
  const milliseconds message_timeout;

  // Delivery reports with a size error, collected while one rd_kafka_poll()
  // call serves them and settled when it returns: the messages of one
  // rejected MessageSet arrive in one delivery-report event, so they are
  // judged together. Touched only by the thread that polls.
  std::vector<std::pair<InFlightCopy*, rd_kafka_resp_err_t>> size_rejections;
};

// One librdkafka producer instance. A fatal error ends it; the publisher
// then starts the next generation.
struct Generation {
  KafkaPtr rk;
  std::uint64_t number = 0;
};

std::size_t wire_size(const Message& message) {
  std::size_t bytes = message.payload.size() + (message.key ? message.key->size() : 0);
  for (const auto& [name, value] : message.headers) {
    bytes += name.size() + value.size();
  }
  return bytes + brokers::wire::kMessageId.size() + message.message_id.size();
}

class KafkaPendingPublish final : public brokers::PendingPublish {
 public:
  KafkaPendingPublish(std::shared_ptr<Core> core, std::shared_ptr<BatchState> batch,
                      std::span<const Message> messages)
      : core_(std::move(core)),
        batch_(std::move(batch)),
        messages_(messages),
        started_(Clock::now()) {}

  KafkaPendingPublish(const KafkaPendingPublish&) = delete;
  KafkaPendingPublish& operator=(const KafkaPendingPublish&) = delete;

  ~KafkaPendingPublish() override {
    try {
      std::lock_guard lock(core_->mutex);
      core_->resolve_locked(*batch_);
    } catch (...) {
      // Only a failing mutex could get here; the copies then keep the batch
      // alive (shared_ptr) and their late reports write into it harmlessly.
    }
  }

  std::vector<PublishResult> wait(Clock::time_point deadline) override {
    std::unique_lock lock(core_->mutex);
    if (!batch_->resolved) {
      batch_->done_cv.wait_until(lock, deadline, [&] { return batch_->pending == 0; });
      const bool down = core_->all_brokers_down.load();
      const auto waited =
          std::max(milliseconds(0), std::chrono::round<milliseconds>(deadline - started_));
      for (std::size_t i = 0; i < messages_.size(); ++i) {
        if (batch_->copies[i] != nullptr) {
          batch_->results[i] = no_report_result(messages_[i].destination, waited, down);
        }
      }
      core_->resolve_locked(*batch_);
    }
    return batch_->results;
  }

 private:
  std::shared_ptr<Core> core_;
  std::shared_ptr<BatchState> batch_;
  std::span<const Message> messages_;
  Clock::time_point started_;
};

class KafkaPublisher final : public brokers::Publisher {
 public:
  explicit KafkaPublisher(const ProducerOptions& options)
      : enqueue_timeout_(options.enqueue_timeout) {
    if (options.bootstrap_servers.empty() && !options.properties.contains("bootstrap.servers")) {
      throw brokers::BrokerError(
          ErrorKind::config,
          "ProducerOptions::bootstrap_servers is empty: set it to host:port[,host:port...]");
    }
    ConfPtr conf(rd_kafka_conf_new());
    if (!options.bootstrap_servers.empty()) {
      set_property(conf.get(), "bootstrap.servers", options.bootstrap_servers,
                   "ProducerOptions::bootstrap_servers");
    }
    set_property(conf.get(), "enable.idempotence", "true", "txbox producer defaults");
    set_property(conf.get(), "acks", "all", "txbox producer defaults");
    set_property(conf.get(), "enable.gapless.guarantee", "true", "txbox producer defaults");
    set_property(conf.get(), "partitioner", "murmur2_random", "txbox producer defaults");
    set_property(conf.get(), "log.connection.close", "false", "txbox producer defaults");
    set_property(conf.get(), "compression.codec", options.compression,
                 "ProducerOptions::compression");
    set_property(conf.get(), "linger.ms", std::to_string(options.linger.count()),
                 "ProducerOptions::linger");
    set_property(conf.get(), "message.timeout.ms", std::to_string(options.message_timeout.count()),
                 "ProducerOptions::message_timeout");
    for (const auto& [name, value] : options.properties) {
      set_property(conf.get(), name, value, "ProducerOptions::properties");
    }
    milliseconds message_timeout = options.message_timeout;
    for (const char* alias : {"message.timeout.ms", "delivery.timeout.ms"}) {
      if (auto it = options.properties.find(alias); it != options.properties.end()) {
        try {
          message_timeout = milliseconds(std::stoll(it->second));
        } catch (...) {
          // librdkafka accepted it, so it is a number; keep the option value otherwise.
        }
      }
    }
    core_ = std::make_shared<Core>(message_timeout);
    install_log_callback(conf.get());
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaPublisher::on_delivery);
    rd_kafka_conf_set_error_cb(conf.get(), &KafkaPublisher::on_error);
    rd_kafka_conf_set_opaque(conf.get(), core_.get());
    conf_template_ = std::move(conf);
    generation_ = create_generation();  // throws BrokerError for a rejected combination
    core_->current_rk.store(generation_->rk.get());
    poller_ = std::thread([this] { poll_loop(); });
  }

  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  ~KafkaPublisher() override {
    stopping_.store(true);
    if (poller_.joinable()) {
      poller_.join();
    }
    std::shared_ptr<Generation> last = generation_;
    // With every broker down a flush only delays the shutdown: the messages
    // stay in the outbox and are published again by the next relay.
    if (!core_->all_brokers_down.load()) {
      rd_kafka_flush(last->rk.get(), static_cast<int>(kShutdownFlush.count()));
      settle_size_rejections();
    }
    if (const int left = rd_kafka_outq_len(last->rk.get()); left > 0) {
      spdlog::warn(
          "Kafka publisher: shutting down with {} message(s) not confirmed by the broker; they "
          "stay in the outbox and will be published again",
          left);
    }
    core_->current_rk.store(nullptr);
    (void)retire(std::move(last));
    generation_.reset();
  }

  bool healthy() const override { return !core_->all_brokers_down.load(); }

  bool probe(milliseconds timeout) override {
    try {
      std::shared_ptr<Generation> generation;
      {
        std::shared_lock lock(generation_mutex_);
        generation = generation_;
      }
      const rd_kafka_metadata_t* metadata = nullptr;
      // all_topics=0 without a topic: the topics this producer knows, a
      // small request. Any broker that answers proves the cluster is there,
      // even when some partitions have no leader.
      const rd_kafka_resp_err_t err =
          rd_kafka_metadata(generation->rk.get(), 0, nullptr, &metadata,
                            static_cast<int>(std::max<milliseconds::rep>(1, timeout.count())));
      const bool answered =
          err == RD_KAFKA_RESP_ERR_NO_ERROR && metadata != nullptr && metadata->broker_cnt > 0;
      if (metadata != nullptr) {
        rd_kafka_metadata_destroy(metadata);
      }
      if (answered) {
        core_->set_all_brokers_down(false, {});
      } else {
        spdlog::debug("Kafka publisher: probe found no broker within {} ms: {}", timeout.count(),
                      rd_kafka_err2str(err));
      }
      return answered;
    } catch (...) {
      return false;
    }
  }

  std::unique_ptr<brokers::PendingPublish> start(std::span<const Message> messages) override {
    auto batch = std::make_shared<BatchState>(messages.size());
    auto pending = std::make_unique<KafkaPendingPublish>(core_, batch, messages);
    if (messages.empty()) {
      std::lock_guard lock(core_->mutex);
      batch->resolved = true;
      return pending;
    }

    // Held while producing: the poller does not swap or retire the producer
    // in the middle of a batch.
    std::shared_lock generation_lock(generation_mutex_);
    Generation& generation = *generation_;

    std::uint64_t losses_at_start = 0;
    {
      std::lock_guard lock(core_->mutex);
      if (auto refusal = core_->barrier.refusal()) {
        // Not sent: nothing is wrong with these messages, so the relay
        // counts no attempt for them (outage class: "not handed over").
        for (auto& result : batch->results) {
          result = PublishResult{false, ErrorClass::outage, *refusal};
        }
        batch->resolved = true;
        return pending;
      }
      batch->sequence = core_->barrier.start_batch();
      losses_at_start = core_->losses.load();
    }

    for (std::size_t i = 0; i < messages.size(); ++i) {
      const Message& message = messages[i];
      if (auto refusal = refuse_destination(message.destination)) {
        set_result(*batch, i, PublishResult{false, ErrorClass::permanent, std::move(*refusal)});
        continue;
      }
      if (core_->losses.load() != losses_at_start) {
        fail_rest(*batch, messages, i,
                  "not sent: the Kafka producer lost messages while this batch was being handed "
                  "over; sending the rest could store them before an earlier message of their "
                  "key; will be retried");
        break;
      }
      const rd_kafka_resp_err_t err = produce_or_attach(generation, message, batch, i);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR || classify(err) == ErrorClass::permanent) {
        continue;  // a permanent failure takes only this message out of the sequence
      }
      core_->note_loss(fmt::format("{} at produce() for topic '{}'", rd_kafka_err2name(err),
                                   message.destination));
      fail_rest(*batch, messages, i + 1,
                fmt::format("not sent: an earlier message of this batch could not be queued "
                            "({}); sending the rest could store them before it; will be retried",
                            rd_kafka_err2name(err)));
      break;
    }
    return pending;
  }

 private:
  std::shared_ptr<Generation> create_generation() {
    ConfPtr conf(rd_kafka_conf_dup(conf_template_.get()));
    auto generation = std::make_shared<Generation>();
    generation->rk = create_client(RD_KAFKA_PRODUCER, std::move(conf), "producer");
    generation->number = ++generation_count_;
    return generation;
  }

  void set_result(BatchState& batch, std::size_t index, PublishResult result) {
    std::lock_guard lock(core_->mutex);
    batch.results[index] = std::move(result);
  }

  void fail_rest(BatchState& batch, std::span<const Message> messages, std::size_t from,
                 const std::string& reason) {
    // Not sent, through no fault of theirs: no attempt counted (outage class).
    std::lock_guard lock(core_->mutex);
    for (std::size_t i = from; i < messages.size(); ++i) {
      batch.results[i] = PublishResult{false, ErrorClass::outage, reason};
    }
  }

  // Puts message `index` of `batch` on its way: waits for the copy of it
  // already queued in this producer, or produces a new copy. On an error
  // nothing of it is queued and its result (and that of any batch that
  // attached meanwhile) is set.
  rd_kafka_resp_err_t produce_or_attach(Generation& generation, const Message& message,
                                        const std::shared_ptr<BatchState>& batch,
                                        std::size_t index) {
    const std::uint64_t fingerprint = content_fingerprint(message);
    InFlightCopy* copy = nullptr;
    {
      std::lock_guard lock(core_->mutex);
      if (auto it = core_->in_flight.find(message.message_id);
          it != core_->in_flight.end() && it->second->fingerprint == fingerprint &&
          it->second->generation == generation.number) {
        it->second->waiters.push_back(Waiter{batch, index});
        batch->copies[index] = it->second;
        ++batch->pending;
        return RD_KAFKA_RESP_ERR_NO_ERROR;
      }
      auto fresh = std::make_unique<InFlightCopy>();
      fresh->message_id = message.message_id;
      fresh->fingerprint = fingerprint;
      fresh->topic = message.destination;
      fresh->bytes = wire_size(message);
      fresh->generation = generation.number;
      fresh->waiters.push_back(Waiter{batch, index});
      copy = fresh.release();
      core_->in_flight.insert_or_assign(message.message_id, copy);
      batch->copies[index] = copy;
      ++batch->pending;
    }

    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    const auto give_up = Clock::now() + enqueue_timeout_;
    for (;;) {
      err = produce(generation, message, copy);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || Clock::now() >= give_up) {
        break;
      }
      // The poller drains the queue as delivery reports arrive.
      std::this_thread::sleep_for(milliseconds(5));
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      core_->settle(copy,
                    PublishResult{false, classify(err, core_->all_brokers_down.load()),
                                  describe_publish_error(err, message.destination, copy->bytes,
                                                         core_->message_timeout)});
    }
    return err;
  }

  rd_kafka_resp_err_t produce(Generation& generation, const Message& message, InFlightCopy* copy) {
    HeadersPtr headers(rd_kafka_headers_new(message.headers.size() + 1));
    for (const auto& [name, value] : message.headers) {
      if (name == brokers::wire::kMessageId) {
        continue;  // ours below is authoritative
      }
      rd_kafka_header_add(headers.get(), name.data(), static_cast<ssize_t>(name.size()),
                          value.data(), static_cast<ssize_t>(value.size()));
    }
    rd_kafka_header_add(headers.get(), brokers::wire::kMessageId.data(), -1, message.message_id.data(),
                        static_cast<ssize_t>(message.message_id.size()));
    auto* payload = const_cast<char*>(message.payload.data());
    rd_kafka_resp_err_t err;
    if (message.key) {
      err = rd_kafka_producev(generation.rk.get(), RD_KAFKA_V_TOPIC(message.destination.c_str()),
                              RD_KAFKA_V_KEY(message.key->data(), message.key->size()),
                              RD_KAFKA_V_VALUE(payload, message.payload.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(copy),
                              RD_KAFKA_V_END);
    } else {
      err = rd_kafka_producev(generation.rk.get(), RD_KAFKA_V_TOPIC(message.destination.c_str()),
                              RD_KAFKA_V_VALUE(payload, message.payload.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_OPAQUE(copy),
                              RD_KAFKA_V_END);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      (void)headers.release();  // owned by the message now
    }
    return err;
  }

  void poll_loop() noexcept {
    while (!stopping_.load()) {
      try {
        std::shared_ptr<Generation> generation = generation_;  // only this thread replaces it
        rd_kafka_poll(generation->rk.get(), static_cast<int>(kPollInterval.count()));
        settle_size_rejections();
        char ignored[1];
        if (rd_kafka_fatal_error(generation->rk.get(), ignored, sizeof ignored) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
          replace(std::move(generation));
        }
      } catch (...) {
        // Allocation failures only; keep serving delivery reports.
      }
    }
  }

  // Judges the messages whose MessageSet the broker rejected for its size:
  // the largest is the offender (permanent), the others were rejected only
  // for sharing its MessageSet (transient).
  void settle_size_rejections() noexcept {
    auto& rejections = core_->size_rejections;
    if (rejections.empty()) {
      return;
    }
    try {
      std::vector<std::size_t> bytes;
      bytes.reserve(rejections.size());
      for (const auto& [copy, err] : rejections) {
        bytes.push_back(copy->bytes);
      }
      const std::size_t offender = pick_size_offender(bytes).value_or(0);
      for (std::size_t i = 0; i < rejections.size(); ++i) {
        const auto& [copy, err] = rejections[i];
        core_->settle(copy, size_rejection_result(err, copy->topic, copy->bytes, i == offender,
                                                  bytes[offender]));
      }
    } catch (...) {
      for (const auto& [copy, err] : rejections) {
        try {
          core_->settle(copy,
                        PublishResult{false, ErrorClass::transient,
                                      "rejected by the broker for its size; will be retried"});
        } catch (...) {
        }
      }
    }
    rejections.clear();
  }

  // The producer hit a fatal error: start a new one, then fail whatever the
  // old one still holds (transiently) and destroy it.
  void replace(std::shared_ptr<Generation> old) {
    char reason[512] = {};
    const rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(old->rk.get(), reason, sizeof reason);
    std::shared_ptr<Generation> fresh;
    try {
      fresh = create_generation();
    } catch (const std::exception& e) {
      if (!recreate_failure_logged_) {
        spdlog::error(
            "Kafka publisher: the producer hit a fatal error ({}: {}) and a new one could not be "
            "created ({}); publishes fail transiently until it can; retrying every {} ms",
            rd_kafka_err2name(fatal), reason, e.what(), kRecreateBackoff.count());
        recreate_failure_logged_ = true;
      }
      std::this_thread::sleep_for(kRecreateBackoff);
      return;
    }
    recreate_failure_logged_ = false;
    // The barrier first: from now on no batch can be sent ahead of the ones
    // the old producer held.
    core_->note_loss(fmt::format("the producer was recreated after the fatal error {}",
                                 rd_kafka_err2name(fatal)));
    {
      std::unique_lock lock(generation_mutex_);
      generation_ = fresh;
      core_->current_rk.store(fresh->rk.get());
    }
    const std::size_t purged_before = core_->purged.load();
    const std::size_t orphans = retire(std::move(old));
    spdlog::error(
        "Kafka publisher: the producer hit a fatal error ({}: {}); replaced it with a new "
        "producer (#{}); {} message(s) it still held were purged: they fail transiently and will "
        "be retried",
        rd_kafka_err2name(fatal), reason, fresh->number,
        core_->purged.load() - purged_before + orphans);
  }

  // Purges what a producer still holds (delivery reports with ERR__PURGE_*:
  // transient), serves those reports, and destroys it. Returns how many
  // messages got no report at all (failed here instead).
  std::size_t retire(std::shared_ptr<Generation> old) {
    rd_kafka_t* rk = old->rk.get();
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    const auto give_up = Clock::now() + kRetireDrain;
    while (rd_kafka_outq_len(rk) > 0 && Clock::now() < give_up) {
      rd_kafka_poll(rk, 50);
      settle_size_rejections();
    }
    rd_kafka_poll(rk, 0);
    settle_size_rejections();
    // librdkafka reports every purged message; anything still registered
    // for this producer now never gets a report. Its waiters fail; the copy
    // itself is left to librdkafka (it may still reference it).
    std::size_t orphans = 0;
    {
      std::lock_guard lock(core_->mutex);
      for (auto it = core_->in_flight.begin(); it != core_->in_flight.end();) {
        InFlightCopy* copy = it->second;
        if (copy->generation != old->number) {
          ++it;
          continue;
        }
        ++orphans;
        for (const Waiter& waiter : copy->waiters) {
          BatchState& batch = *waiter.batch;
          if (batch.copies[waiter.index] != copy) {
            continue;
          }
          batch.results[waiter.index] =
              PublishResult{false, ErrorClass::transient,
                            describe_publish_error(RD_KAFKA_RESP_ERR__PURGE_QUEUE, copy->topic,
                                                   copy->bytes, core_->message_timeout)};
          batch.copies[waiter.index] = nullptr;
          if (--batch.pending == 0) {
            batch.done_cv.notify_all();
          }
        }
        copy->waiters.clear();
        it = core_->in_flight.erase(it);
      }
    }
    old.reset();  // rd_kafka_destroy, unless a probe() still holds it
    return orphans;
  }

  static void on_delivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* rkmessage,
                          void* opaque) noexcept {
    auto* core = static_cast<Core*>(opaque);
    auto* copy = static_cast<InFlightCopy*>(rkmessage->_private);
    if (core == nullptr || copy == nullptr) {
      return;
    }
    try {
      if (rkmessage->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        core->set_all_brokers_down(false, {});
        core->settle(copy, PublishResult{true, ErrorClass::transient, {}});
        return;
      }
      if (rkmessage->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
          rkmessage->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        core->purged.fetch_add(1);
      }
      if (is_size_error(rkmessage->err)) {
        core->size_rejections.emplace_back(copy, rkmessage->err);
        return;
      }
      // No barrier for a single failed report (a message.timeout.ms the user
      // set, for instance): the caller never has two batches with a common
      // key in flight, and with the defaults a report fails only through a
      // fatal error, whose replacement raises the barrier.
      core->settle(copy,
                   PublishResult{false, classify(rkmessage->err, core->all_brokers_down.load()),
                                 describe_publish_error(rkmessage->err, copy->topic, copy->bytes,
                                                        core->message_timeout)});
    } catch (...) {
      // Never let an exception cross into librdkafka. The waiting batches
      // then see "no delivery report" (transient) at their deadline.
    }
  }

  static void on_error(rd_kafka_t* rk, int err, const char* reason, void* opaque) noexcept {
    auto* core = static_cast<Core*>(opaque);
    try {
      const auto code = static_cast<rd_kafka_resp_err_t>(err);
      if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && rk == core->current_rk.load()) {
        core->set_all_brokers_down(
            true, fmt::format("all Kafka brokers are down ({})", reason ? reason : ""));
      } else {
        // __FATAL included: the poller replaces the producer and logs it.
        spdlog::debug("Kafka publisher: {}: {}", rd_kafka_err2name(code), reason ? reason : "");
      }
    } catch (...) {
    }
  }

  std::shared_ptr<Core> core_;
  milliseconds enqueue_timeout_;
  ConfPtr conf_template_;
  std::uint64_t generation_count_ = 0;
  // The current producer; replaced only by the poller thread, read by
  // start() and probe() under the lock.
  std::shared_mutex generation_mutex_;
  std::shared_ptr<Generation> generation_;
  bool recreate_failure_logged_ = false;  // poller thread only
  std::atomic<bool> stopping_{false};
  std::thread poller_;
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const ProducerOptions& options) {
  return std::make_unique<KafkaPublisher>(options);
}

}  // namespace txbox::kafka
