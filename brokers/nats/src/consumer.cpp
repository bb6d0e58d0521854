// Durable JetStream pull consumer: fetches up to `batch` messages per pull
// request, hands them out one at a time, and keeps each message (by stream
// sequence) until it is acked or dead-lettered.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "errors.hpp"
#include "handles.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/nats/nats.hpp"

namespace txbox::nats {

namespace {

using namespace detail;
using brokers::BrokerError;
using brokers::Delivery;
using Clock = std::chrono::steady_clock;

namespace wire = brokers::wire;
// Unsettled messages kept for ack(); beyond this the oldest are dropped (the
// server redelivers them after AckWait anyway).
constexpr std::size_t kMaxUnsettled = 100'000;
// Polls shorter than this fetch without waiting (see fetch()).
constexpr std::chrono::milliseconds kShortestFetchWait{100};

std::string header(natsMsg* msg, const char* name) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, name, &value) == NATS_OK && value != nullptr) return value;
  return {};
}

brokers::Headers all_headers(natsMsg* msg) {
  brokers::Headers out;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK || keys == nullptr) return out;
  for (int i = 0; i < count; ++i) {
    const std::string_view name = keys[i];
    if (name == wire::kMessageId || name == wire::kMessageKey || name == wire::kNatsMsgId) {
      continue;
    }
    const char** values = nullptr;
    int n = 0;
    if (natsMsgHeader_Values(msg, keys[i], &values, &n) == NATS_OK && values != nullptr) {
      for (int j = 0; j < n; ++j) out.emplace_back(keys[i], values[j]);
      std::free(static_cast<void*>(values));
    }
  }
  std::free(static_cast<void*>(keys));
  return out;
}

class NatsConsumer final : public brokers::Consumer {
 public:
  NatsConsumer(const brokers::BrokerUrl& url, const ConsumerOptions& options)
      : options_(options) {
    if (options_.subject.empty()) {
      throw txbox::UsageError(
          "nats::ConsumerOptions::subject is empty: set the subject to consume");
    }
    if (auto why = invalid_subject_reason(options_.subject); !why.empty()) {
      throw txbox::UsageError(fmt::format(
          "nats::ConsumerOptions::subject '{}' is not a valid subject: {}", options_.subject, why));
    }
    if (options_.batch <= 0 || options_.max_deliver == 0 || options_.ack_wait.count() <= 0) {
      throw txbox::UsageError(
          "nats::ConsumerOptions: batch and ack_wait must be positive and max_deliver non-zero "
          "(-1 = unlimited)");
    }
    if (options_.durable.empty()) options_.durable = "txbox-" + sanitize_name(options_.subject);
    if (options_.dead_letter_subject.empty()) {
      options_.dead_letter_subject = options_.subject + ".dlq";
    }
    std::string name;
    for (const auto& [key, value] : url.query) {
      if (key == "name") {
        name = value;
      } else if (key != "create_streams" && key != "duplicate_window") {  // publisher options
        throw txbox::UsageError(fmt::format(
            "unknown NATS broker URL option '{}' in '{}' for a consumer: supported is name",
            key, display_servers(url)));
      }
    }
    conn_ = std::make_unique<Connection>(url, ConnectionOptions{.role = "consumer", .name = name});
    js_ = conn_->jetstream();

    jsSubOptions so;
    jsSubOptions_Init(&so);
    if (!options_.stream.empty()) so.Stream = options_.stream.c_str();
    so.Config.Durable = options_.durable.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckWait =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options_.ack_wait).count();
    so.Config.MaxDeliver = options_.max_deliver;
    natsSubscription* sub = nullptr;
    jsErrCode code{};
    const natsStatus s = js_PullSubscribe(&sub, js_.get(), options_.subject.c_str(),
                                          options_.durable.c_str(), nullptr, &so, &code);
    sub_.reset(sub);
    if (s != NATS_OK) {
      const char* last = nats_GetLastError(nullptr);
      throw BrokerError(
          s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_DISCONNECTED
              ? ErrorKind::unavailable
              : ErrorKind::config,
          fmt::format(
              "cannot create the durable JetStream pull consumer '{}' on subject '{}'{}: {}{}{}; "
              "check that a stream covers the subject (`nats stream add <name> --subjects '{}'`) "
              "and that an existing durable of that name has a compatible configuration",
              options_.durable, options_.subject,
              options_.stream.empty() ? "" : fmt::format(" of stream '{}'", options_.stream),
              status_name(s),
              code != 0 ? fmt::format(" [JetStream error {}]", static_cast<int>(code)) : "",
              last != nullptr ? fmt::format(" ({})", last) : "", options_.subject));
    }
    spdlog::info("NATS consumer: durable '{}' on '{}' (AckWait {} ms, MaxDeliver {})",
                 options_.durable, options_.subject, options_.ack_wait.count(),
                 options_.max_deliver);
    wait_for_redeliveries();
  }

  ~NatsConsumer() override { close(); }

  std::optional<Delivery> poll(std::chrono::milliseconds timeout) override {
    std::lock_guard lock(mutex_);
    if (closed_)
      throw BrokerError(ErrorKind::internal, "NATS consumer is closed: create a new one");
    if (buffer_.empty()) {
      if (const auto now = Clock::now(); now < redeliveries_due_) {
        std::this_thread::sleep_for(std::min<Clock::duration>(timeout, redeliveries_due_ - now));
        return std::nullopt;
      }
      fetch(timeout);
    }
    if (buffer_.empty()) return std::nullopt;
    MsgPtr msg = std::move(buffer_.front());
    buffer_.pop_front();
    return deliver(std::move(msg));
  }

  void ack(const Delivery& delivery) override {
    std::lock_guard lock(mutex_);
    natsMsg* msg = find(delivery);
    jsErrCode code{};
    const natsStatus s = natsMsg_AckSync(msg, nullptr, &code);
    if (s != NATS_OK) {
      throw BrokerError(
          ErrorKind::unavailable,
          fmt::format("NATS did not confirm the ack of stream sequence {} on '{}': {}; the "
                      "message will be redelivered after AckWait ({} ms) unless a retry succeeds",
                      delivery.offset, delivery.source, status_name(s), options_.ack_wait.count()));
    }
    unsettled_.erase(static_cast<uint64_t>(delivery.offset));
  }

  // All but the last acked without waiting, the last with a round trip:
  // the server handles a connection's messages in order, so its reply
  // confirms the earlier acks too (one round trip a batch, not one a
  // message). A delivery acked already through another copy (a redelivery
  // replaces the earlier copy) is skipped.
  void ack_batch(std::span<const Delivery> deliveries) override {
    std::lock_guard lock(mutex_);
    if (closed_) throw BrokerError(ErrorKind::internal, "NATS consumer is closed: create a new one");
    std::map<uint64_t, natsMsg*> batch;
    for (const auto& d : deliveries)
      if (auto it = unsettled_.find(static_cast<uint64_t>(d.offset)); it != unsettled_.end())
        batch.emplace(it->first, it->second.get());
    if (batch.empty()) return;
    const auto fail = [&](uint64_t sequence, natsStatus s) {
      return BrokerError(
          ErrorKind::unavailable,
          fmt::format("NATS did not take the ack of stream sequence {} on '{}' (in a batch of {}): {}; the "
                      "unacked messages are redelivered after AckWait ({} ms)",
                      sequence, options_.subject, batch.size(), status_name(s), options_.ack_wait.count()));
    };
    const auto last = std::prev(batch.end());
    for (auto it = batch.begin(); it != last; ++it)
      if (const natsStatus s = natsMsg_Ack(it->second, nullptr); s != NATS_OK) throw fail(it->first, s);
    jsErrCode code{};
    if (const natsStatus s = natsMsg_AckSync(last->second, nullptr, &code); s != NATS_OK) throw fail(last->first, s);
    for (const auto& [sequence, msg] : batch) unsettled_.erase(sequence);
  }

  bool dead_letter(const Delivery& delivery, const std::string& reason) override {
    std::lock_guard lock(mutex_);
    natsMsg* original = find(delivery);
    natsMsg* raw = nullptr;
    natsStatus s =
        natsMsg_Create(&raw, options_.dead_letter_subject.c_str(), nullptr,
                       natsMsg_GetData(original), natsMsg_GetDataLength(original));
    MsgPtr dlq(raw);
    const char** keys = nullptr;
    int count = 0;
    if (s == NATS_OK && natsMsgHeader_Keys(original, &keys, &count) == NATS_OK && keys != nullptr) {
      for (int i = 0; i < count && s == NATS_OK; ++i) {
        if (wire::is_dead_letter_header(keys[i])) continue;  // replaced by this dead letter's
        const char** values = nullptr;
        int n = 0;
        if (natsMsgHeader_Values(original, keys[i], &values, &n) == NATS_OK && values != nullptr) {
          for (int j = 0; j < n && s == NATS_OK; ++j) s = natsMsgHeader_Add(raw, keys[i], values[j]);
          std::free(static_cast<void*>(values));
        }
      }
      std::free(static_cast<void*>(keys));
    }
    for (const auto& [name, value] : wire::dead_letter_headers(
             {.error = reason,
              .error_class = std::string(wire::kClassHandler),
              .attempts = delivery.delivery_attempt,
              .original_destination = natsMsg_GetSubject(original),
              .original_position = std::to_string(delivery.offset)})) {
      if (s == NATS_OK) s = natsMsgHeader_Set(raw, name.c_str(), value.c_str());
    }
    if (s != NATS_OK) {
      throw BrokerError(ErrorKind::internal,
                        fmt::format("cannot build the dead-letter message for '{}': {}",
                                    options_.dead_letter_subject, status_name(s)));
    }
    jsPubAck* pa = nullptr;
    jsErrCode code{};
    s = js_PublishMsg(&pa, js_.get(), raw, nullptr, &code);
    PubAckPtr ack(pa);
    if (s == NATS_NO_RESPONDERS) {
      if (!warned_core_dlq_) {
        warned_core_dlq_ = true;
        spdlog::warn(
            "NATS consumer: no JetStream stream covers the dead-letter subject '{}': dead letters "
            "are published with core NATS and are lost unless someone subscribes; create a stream "
            "(`nats stream add <name> --subjects '{}'`)",
            options_.dead_letter_subject, options_.dead_letter_subject);
      }
      s = natsConnection_PublishMsg(conn_->get(), raw);
      if (s == NATS_OK) s = natsConnection_FlushTimeout(conn_->get(), 5000);
    }
    if (s != NATS_OK) {
      throw BrokerError(
          classify(PublishError::reported(s, {}, code)) != brokers::ErrorClass::permanent
              ? ErrorKind::unavailable
              : ErrorKind::permanent,
          fmt::format(
              "could not publish the dead letter of stream sequence {} to '{}': {}{}; "
              "the message stays unacked and is redelivered after AckWait",
              delivery.offset, options_.dead_letter_subject, status_name(s),
              code != 0 ? fmt::format(" [JetStream error {}]", static_cast<int>(code)) : ""));
    }
    s = natsMsg_Term(original, nullptr);
    if (s == NATS_OK) s = natsConnection_FlushTimeout(conn_->get(), 5000);
    if (s != NATS_OK) {
      throw BrokerError(
          ErrorKind::unavailable,
          fmt::format("dead letter published to '{}', but terminating stream sequence {} failed: "
                      "{}; it may be redelivered (the inbox skips it as a duplicate)",
                      options_.dead_letter_subject, delivery.offset, status_name(s)));
    }
    unsettled_.erase(static_cast<uint64_t>(delivery.offset));
    return true;
  }

  void close() override {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    buffer_.clear();  // unacked: redelivered after AckWait
    unsettled_.clear();
    sub_.reset();  // keeps the durable consumer on the server
    js_.reset();
    conn_.reset();
  }

 private:
  // Messages an earlier member of the durable (a killed process) fetched
  // and never acked come back only after AckWait; fetching new ones before
  // would apply a key's later messages before its earlier ones. So a
  // consumer that finds such messages fetches nothing until they are due,
  // then gets them first (the server serves redeliveries before new ones).
  void wait_for_redeliveries() {
    // The durable's stream: the one given, else the stream that has a
    // consumer of that name (cnats 3.4 cannot tell it from a bound pull
    // subscription).
    std::vector<std::string> streams;
    if (!options_.stream.empty()) {
      streams.push_back(options_.stream);
    } else {
      jsStreamNamesList* names = nullptr;
      if (js_StreamNames(&names, js_.get(), nullptr, nullptr) == NATS_OK && names != nullptr) {
        for (int i = 0; i < names->Count; ++i) streams.emplace_back(names->List[i]);
        jsStreamNamesList_Destroy(names);
      }
    }
    jsConsumerInfo* raw = nullptr;
    for (const auto& stream : streams)
      if (js_GetConsumerInfo(&raw, js_.get(), stream.c_str(), options_.durable.c_str(), nullptr, nullptr) ==
              NATS_OK &&
          raw != nullptr)
        break;
    if (raw == nullptr) {
      spdlog::warn("NATS consumer: cannot read the state of durable '{}'; fetching at once, so messages a "
                   "killed predecessor left unacked may come after later ones of their key",
                   options_.durable);
      return;
    }
    ConsumerInfoPtr info(raw);
    if (info->NumAckPending <= 0) return;
    const auto wait = options_.ack_wait + options_.ack_wait / 10 + std::chrono::milliseconds(200);
    redeliveries_due_ = Clock::now() + wait;
    spdlog::info("NATS consumer: durable '{}' has {} messages delivered before and not acked; fetching "
                 "nothing new for {} ms (AckWait and a margin), so that they come first and each key keeps its order",
                 options_.durable, info->NumAckPending, std::chrono::duration_cast<std::chrono::milliseconds>(wait).count());
  }

  void fetch(std::chrono::milliseconds timeout) {
    natsMsgList list{};
    jsErrCode code{};
    const auto started = Clock::now();
    natsStatus s;
    if (timeout < kShortestFetchWait) {
      // A pull request the server still holds after the client stopped
      // waiting delivers late, into the next Fetch, and cnats 3.4.1 can then
      // write past its batch array (heap corruption, seen with 5 ms polls):
      // so a short poll asks for what is there now and leaves no request
      // behind.
      jsFetchRequest request;
      jsFetchRequest_Init(&request);
      request.Batch = options_.batch;
      request.NoWait = true;
      s = natsSubscription_FetchRequest(&list, sub_.get(), &request);
      if (s == NATS_NOT_FOUND) s = NATS_TIMEOUT;  // nothing there now
    } else {
      s = natsSubscription_Fetch(&list, sub_.get(), options_.batch, timeout.count(), &code);
    }
    if (s == NATS_OK) {
      for (int i = 0; i < list.Count; ++i) {
        buffer_.emplace_back(list.Msgs[i]);
        list.Msgs[i] = nullptr;
      }
      natsMsgList_Destroy(&list);
      if (fetch_failing_) {
        fetch_failing_ = false;
        spdlog::info("NATS consumer: fetching from '{}' works again", options_.subject);
      }
      return;
    }
    natsMsgList_Destroy(&list);
    if (s == NATS_TIMEOUT) {
      // Do not spin on a short poll: wait out what is left of it.
      const auto left = timeout - (Clock::now() - started);
      if (left > Clock::duration::zero()) std::this_thread::sleep_for(left);
      return;
    }
    if (s == NATS_INVALID_SUBSCRIPTION || s == NATS_CONNECTION_CLOSED) {
      throw BrokerError(ErrorKind::unavailable,
                        fmt::format("NATS pull subscription on '{}' is no longer usable: {}; "
                                    "create a new consumer",
                                    options_.subject, status_name(s)));
    }
    if (!fetch_failing_) {
      fetch_failing_ = true;
      spdlog::warn("NATS consumer: fetch from '{}' failed: {}{}; retrying", options_.subject,
                   status_name(s),
                   code != 0 ? fmt::format(" [JetStream error {}]", static_cast<int>(code)) : "");
    }
    // Do not spin while the server is away: wait out the poll timeout.
    const auto left = timeout - (Clock::now() - started);
    if (left > Clock::duration::zero()) std::this_thread::sleep_for(left);
  }

  Delivery deliver(MsgPtr msg) {
    natsMsg* raw = msg.get();
    Delivery d;
    d.source = options_.subject;
    d.message.destination = natsMsg_GetSubject(raw);
    d.message.payload.assign(natsMsg_GetData(raw), static_cast<std::size_t>(natsMsg_GetDataLength(raw)));
    d.message.message_id = header(raw, wire::kNatsMsgId.data());
    if (d.message.message_id.empty()) d.message.message_id = header(raw, wire::kMessageId.data());
    const char* key = nullptr;
    if (natsMsgHeader_Get(raw, wire::kMessageKey.data(), &key) == NATS_OK && key != nullptr) {
      d.message.key = key;
    }
    d.message.headers = all_headers(raw);
    jsMsgMetaData* meta_raw = nullptr;
    if (natsMsg_GetMetaData(&meta_raw, raw) == NATS_OK) {
      MetaPtr meta(meta_raw);
      d.offset = static_cast<int64_t>(meta->Sequence.Stream);
      d.delivery_attempt = static_cast<int>(meta->NumDelivered);
    } else {
      d.offset = static_cast<int64_t>(natsMsg_GetSequence(raw));
    }
    d.ack_token = std::to_string(d.offset);
    if (unsettled_.size() >= kMaxUnsettled) unsettled_.erase(unsettled_.begin());
    unsettled_[static_cast<uint64_t>(d.offset)] = std::move(msg);  // a redelivery replaces it
    return d;
  }

  natsMsg* find(const Delivery& delivery) {
    if (closed_)
      throw BrokerError(ErrorKind::internal, "NATS consumer is closed: create a new one");
    auto it = unsettled_.find(static_cast<uint64_t>(delivery.offset));
    if (it == unsettled_.end()) {
      throw BrokerError(
          ErrorKind::internal,
          fmt::format("stream sequence {} on '{}' is not an unsettled delivery of this consumer "
                      "(already acked or dead-lettered, or from another consumer); nothing to do",
                      delivery.offset, delivery.source));
    }
    return it->second.get();
  }

  ConsumerOptions options_;
  std::mutex mutex_;
  std::unique_ptr<Connection> conn_;
  JsPtr js_;
  SubPtr sub_;
  std::deque<MsgPtr> buffer_;
  std::map<uint64_t, MsgPtr> unsettled_;
  bool closed_ = false;
  Clock::time_point redeliveries_due_{};
  bool fetch_failing_ = false;
  bool warned_core_dlq_ = false;
};

}  // namespace

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const ConsumerOptions& options) {
  return std::make_unique<NatsConsumer>(url, options);
}

// The factory the broker registry calls (brokers::open_consumer).
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  brokers::require_no_properties("the NATS consumer", subscription.properties);
  return make_consumer(url, ConsumerOptions{.subject = subscription.source, .durable = subscription.group});
}

}  // namespace txbox::nats
