// JetStream publisher: one cnats connection shared by every relay worker,
// and a pool of JetStream contexts ("lanes"). A publish() call takes a lane
// for itself, so the PubAcks of concurrent batches never mix: each lane has
// its own async-ack subscription, its own pending count (what
// js_PublishAsyncComplete waits for) and its own message -> index map.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "errors.hpp"
#include "handles.hpp"
#include "txbox/nats/nats.hpp"

namespace txbox::nats {

namespace {

using namespace detail;
using brokers::ErrorClass;
using brokers::Message;
using brokers::PublishResult;
using Clock = std::chrono::steady_clock;

constexpr const char* kMessageIdHeader = "message-id";
constexpr const char* kMessageKeyHeader = "message-key";
constexpr const char* kNatsMsgIdHeader = "Nats-Msg-Id";
constexpr std::chrono::minutes kDefaultDuplicateWindow{2};
constexpr int64_t kApiWaitMs = 5000;

// "2m", "120s", "500ms", "1h", or a bare number of milliseconds.
std::chrono::milliseconds parse_duration(const std::string& text, const std::string& option) {
  std::size_t pos = 0;
  long long value = -1;
  try {
    value = std::stoll(text, &pos);
  } catch (...) {
    pos = 0;
  }
  const std::string unit = text.substr(pos);
  long long ms = -1;
  if (pos > 0 && value > 0) {
    if (unit.empty() || unit == "ms") ms = value;
    else if (unit == "s") ms = value * 1000;
    else if (unit == "m") ms = value * 60'000;
    else if (unit == "h") ms = value * 3'600'000;
  }
  if (ms <= 0) {
    throw std::invalid_argument(fmt::format(
        "broker URL option {}={} is not a positive duration: use e.g. 500ms, 120s, 2m or 1h",
        option, text));
  }
  return std::chrono::milliseconds(ms);
}

bool parse_bool(const std::string& text, const std::string& option) {
  if (text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  throw std::invalid_argument(
      fmt::format("broker URL option {}={} is not a boolean: use true or false", option, text));
}

std::size_t wire_size(const Message& m) {
  std::size_t bytes = m.payload.size() + m.destination.size() + 2 * m.message_id.size() + 64;
  if (m.key) bytes += m.key->size() + 16;
  for (const auto& [name, value] : m.headers) bytes += name.size() + value.size() + 4;
  return bytes;
}

struct Outcome {
  bool done = false;
  bool confirmed = false;
  PublishError error;
};

// One JetStream context and the state of the batch currently using it.
struct Lane {
  JsPtr js;
  std::mutex mutex;
  std::condition_variable cv;
  std::unordered_map<natsMsg*, std::size_t> inflight;  // messages the library owns
  std::vector<Outcome> outcomes;
  std::size_t pending = 0;

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae,
                     void* closure) noexcept {
    auto* lane = static_cast<Lane*>(closure);
    try {
      std::lock_guard lock(lane->mutex);
      auto it = lane->inflight.find(msg);
      if (it != lane->inflight.end()) {
        Outcome& outcome = lane->outcomes[it->second];
        lane->inflight.erase(it);
        outcome.done = true;
        if (pa != nullptr) {
          outcome.confirmed = true;  // pa->Duplicate: stored before, also confirmed
        } else if (pae != nullptr) {
          outcome.error.status = pae->Err;
          outcome.error.code = pae->ErrCode;
          outcome.error.text = pae->ErrText != nullptr ? pae->ErrText : "";
        } else {
          outcome.error.status = NATS_ERR;
          outcome.error.text = "neither PubAck nor error reported";
        }
        if (--lane->pending == 0) lane->cv.notify_all();
      }
    } catch (...) {
      // Never let an exception cross into cnats: the message then stays
      // unresolved and is reported as a transient timeout.
    }
    natsMsg_Destroy(msg);  // with an AckHandler the message is ours to destroy
  }
};

class NatsPublisher final : public brokers::Publisher {
 public:
  NatsPublisher(const brokers::BrokerUrl& url, const brokers::Properties& properties) {
    std::string name;
    for (const auto& [key, value] : url.query) {
      if (key == "create_streams") {
        create_streams_ = parse_bool(value, key);
      } else if (key == "duplicate_window") {
        duplicate_window_ = parse_duration(value, key);
      } else if (key == "name") {
        name = value;
      } else {
        throw std::invalid_argument(fmt::format(
            "unknown NATS broker URL option '{}' in '{}': supported are create_streams=true|false, "
            "duplicate_window=<duration>, name=<connection name>",
            key, url.original));
      }
    }
    for (const auto& [key, value] : properties) {
      if (key == "name") {
        name = value;
      } else {
        throw std::invalid_argument(fmt::format(
            "unknown NATS publisher property '{}': supported is name (put stream options in the "
            "broker URL query: ?create_streams=true&duplicate_window=2m)",
            key));
      }
    }
    conn_ = std::make_unique<Connection>(url, "publisher", /*retry_initial=*/true, name);
  }

  NatsPublisher(const NatsPublisher&) = delete;
  NatsPublisher& operator=(const NatsPublisher&) = delete;

  ~NatsPublisher() override {
    // Take back every unacknowledged message so no ack handler runs for
    // them any more, then close the connection (waits for its callbacks)
    // before the lanes (ack handler closures) go away.
    std::lock_guard lock(pool_mutex_);
    for (auto& lane : lanes_) reclaim(*lane);
    conn_.reset();
  }

  bool healthy() const override { return conn_->connected(); }

  std::vector<PublishResult> publish(std::span<const Message> messages,
                                     std::chrono::milliseconds timeout) override {
    std::vector<PublishResult> results(messages.size());
    if (messages.empty()) return results;
    const auto deadline = Clock::now() + timeout;

    if (!conn_->connected()) {
      const std::string why = fmt::format(
          "NATS connection to {} is {}: not publishing until it reconnects; will be retried",
          conn_->servers(), conn_->status_text());
      for (auto& r : results) r = PublishResult{false, ErrorClass::transient, why};
      return results;
    }

    LaneLease lease(*this);
    Lane& lane = lease.lane();
    if (create_streams_) ensure_streams(lane, messages);

    {
      std::lock_guard lock(lane.mutex);
      lane.outcomes.assign(messages.size(), Outcome{});
      lane.inflight.clear();
      lane.pending = 0;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    for (std::size_t i = 0; i < messages.size(); ++i) {
      send(lane, messages[i], i, po, remaining_ms(deadline));
    }

    // Wait for every PubAck (or per-message error / MaxWait timeout).
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = remaining_ms(deadline);
    (void)js_PublishAsyncComplete(lane.js.get(), &wait);  // NATS_TIMEOUT is handled below
    {
      std::unique_lock lock(lane.mutex);
      lane.cv.wait_until(lock, deadline, [&] { return lane.pending == 0; });
    }
    reclaim(lane);

    std::vector<Outcome> outcomes;
    {
      std::lock_guard lock(lane.mutex);
      outcomes.swap(lane.outcomes);
    }
    std::optional<bool> jetstream_available;
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
      Outcome& o = outcomes[i];
      const Message& m = messages[i];
      if (o.confirmed) {
        results[i].confirmed = true;
        continue;
      }
      if (!o.done) {
        o.error.status = NATS_TIMEOUT;
      }
      if (o.error.status == NATS_NO_RESPONDERS) {
        if (!jetstream_available) jetstream_available = jetstream_answers(lane);
        o.error.jetstream_available = *jetstream_available;
        if (create_streams_) {
          o.error.creates_streams = true;
          forget_stream(m.destination);
        }
      }
      results[i] = PublishResult{false, classify(o.error),
                                 describe(o.error, m.destination, wire_size(m), timeout)};
    }
    return results;
  }

 private:
  class LaneLease {
   public:
    explicit LaneLease(NatsPublisher& p) : p_(p), lane_(p.acquire()) {}
    ~LaneLease() { p_.release(lane_); }
    LaneLease(const LaneLease&) = delete;
    LaneLease& operator=(const LaneLease&) = delete;
    Lane& lane() { return *lane_; }

   private:
    NatsPublisher& p_;
    Lane* lane_;
  };

  static int64_t remaining_ms(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return std::max<int64_t>(left, 1);
  }

  Lane* acquire() {
    std::lock_guard lock(pool_mutex_);
    if (!free_.empty()) {
      Lane* lane = free_.back();
      free_.pop_back();
      return lane;
    }
    auto lane = std::make_unique<Lane>();
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = kApiWaitMs;
    jo.PublishAsync.AckHandler = &Lane::on_ack;
    jo.PublishAsync.AckHandlerClosure = lane.get();
    lane->js = conn_->jetstream(&jo);
    lanes_.push_back(std::move(lane));
    return lanes_.back().get();
  }

  void release(Lane* lane) {
    std::lock_guard lock(pool_mutex_);
    free_.push_back(lane);
  }

  // Takes back the messages still waiting for a PubAck: cnats forgets them
  // (a late ack is dropped) and they are destroyed here.
  static void reclaim(Lane& lane) {
    natsMsgList list{};
    if (js_PublishAsyncGetPendingList(&list, lane.js.get()) != NATS_OK) return;
    {
      std::lock_guard lock(lane.mutex);
      for (int i = 0; i < list.Count; ++i) {
        if (lane.inflight.erase(list.Msgs[i]) > 0 && lane.pending > 0) --lane.pending;
      }
    }
    natsMsgList_Destroy(&list);
  }

  void send(Lane& lane, const Message& m, std::size_t index, jsPubOptions& po, int64_t max_wait) {
    auto fail = [&](PublishError error) {
      std::lock_guard lock(lane.mutex);
      lane.outcomes[index].done = true;
      lane.outcomes[index].error = std::move(error);
    };
    if (auto why = invalid_subject_reason(m.destination); !why.empty()) {
      fail(PublishError{NATS_INVALID_SUBJECT, {}, why, true, false});
      return;
    }
    natsMsg* raw = nullptr;
    natsStatus s = natsMsg_Create(&raw, m.destination.c_str(), nullptr, m.payload.data(),
                                  static_cast<int>(m.payload.size()));
    MsgPtr msg(raw);
    for (const auto& [name, value] : m.headers) {
      if (s != NATS_OK) break;
      if (name == kMessageIdHeader || name == kMessageKeyHeader || name == kNatsMsgIdHeader) {
        continue;  // ours below are authoritative
      }
      s = natsMsgHeader_Add(raw, name.c_str(), value.c_str());
      if (s != NATS_OK) {
        fail(PublishError{NATS_INVALID_ARG, {},
                          fmt::format("header '{}' cannot be sent as a NATS header (names need "
                                      "printable characters without ':', values no newlines)",
                                      name),
                          true, false});
        return;
      }
    }
    if (s == NATS_OK) s = natsMsgHeader_Set(raw, kMessageIdHeader, m.message_id.c_str());
    if (s == NATS_OK && m.key) s = natsMsgHeader_Set(raw, kMessageKeyHeader, m.key->c_str());
    if (s != NATS_OK) {
      fail(PublishError{s, {}, nats_GetLastError(nullptr) ? nats_GetLastError(nullptr) : "", true, false});
      return;
    }
    po.MsgId = m.message_id.c_str();
    po.MaxWait = max_wait;
    {
      std::lock_guard lock(lane.mutex);
      lane.inflight.emplace(raw, index);
      ++lane.pending;
    }
    natsMsg* handed = msg.release();
    s = js_PublishMsgAsync(lane.js.get(), &handed, &po);
    if (s != NATS_OK && handed != nullptr) {
      // Still ours: the library will not call the ack handler for it.
      MsgPtr back(handed);
      std::lock_guard lock(lane.mutex);
      if (lane.inflight.erase(handed) > 0) --lane.pending;
      lane.outcomes[index].done = true;
      lane.outcomes[index].error = PublishError{s, {}, "", true, false};
    }
  }

  // True when the JetStream API answers (account info request).
  static bool jetstream_answers(Lane& lane) {
    jsAccountInfo* raw = nullptr;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    jsErrCode code{};
    const natsStatus s = js_GetAccountInfo(&raw, lane.js.get(), &jo, &code);
    AccountInfoPtr info(raw);
    return s == NATS_OK;
  }

  void ensure_streams(Lane& lane, std::span<const Message> messages) {
    std::vector<std::string> missing;
    {
      std::lock_guard lock(streams_mutex_);
      for (const auto& m : messages) {
        if (!ensured_.contains(m.destination) &&
            std::find(missing.begin(), missing.end(), m.destination) == missing.end() &&
            invalid_subject_reason(m.destination).empty()) {
          missing.push_back(m.destination);
        }
      }
    }
    for (const auto& subject : missing) {
      if (ensure_stream(lane, subject)) {
        std::lock_guard lock(streams_mutex_);
        ensured_.insert(subject);
      }
    }
  }

  bool ensure_stream(Lane& lane, const std::string& subject) {
    const std::string name = sanitize_name(subject);
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char* subjects[] = {subject.c_str()};
    cfg.Name = name.c_str();
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates =
        std::chrono::duration_cast<std::chrono::nanoseconds>(duplicate_window_).count();
    jsStreamInfo* raw = nullptr;
    jsErrCode code{};
    const natsStatus s = js_AddStream(&raw, lane.js.get(), &cfg, nullptr, &code);
    StreamInfoPtr info(raw);
    if (s == NATS_OK) {
      spdlog::info(
          "NATS publisher: created JetStream stream '{}' for subject '{}' (file storage, "
          "duplicate window {} ms)",
          name, subject, duplicate_window_.count());
      return true;
    }
    if (code == JSStreamNameExistErr || code == JSStreamSubjectOverlapErr) {
      return true;  // a stream already exists (same name, or another one covering the subject)
    }
    spdlog::warn(
        "NATS publisher: could not create JetStream stream '{}' for subject '{}': {} [JetStream "
        "error {}]; will try again with the next batch",
        name, subject, status_name(s), static_cast<int>(code));
    return false;
  }

  void forget_stream(const std::string& subject) {
    std::lock_guard lock(streams_mutex_);
    ensured_.erase(subject);
  }

  bool create_streams_ = false;
  std::chrono::milliseconds duplicate_window_{kDefaultDuplicateWindow};
  std::unique_ptr<Connection> conn_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::vector<Lane*> free_;
  std::mutex streams_mutex_;
  std::set<std::string> ensured_;
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties) {
  return std::make_unique<NatsPublisher>(url, properties);
}

}  // namespace txbox::nats
