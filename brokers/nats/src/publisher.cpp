// JetStream publisher: one cnats connection shared by every relay worker and
// a pool of JetStream contexts ("lanes"). start() takes a lane for its batch,
// so the PubAcks of concurrent batches never mix: each lane has its own
// async-ack subscription, its own pending map in cnats and its own
// message -> index map here. The PendingPublish gives the lane back.
//
// Order under failures: the connection has no reconnect buffer (a publish
// while reconnecting fails at once instead of being sent after the
// reconnect), and within a batch the first send that fails for a connection
// reason stops the batch: nothing after it is sent. So what the server stored
// of a batch is always a prefix of it, as far as a connection failure goes.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "errors.hpp"
#include "handles.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/nats/nats.hpp"

namespace txbox::nats {

namespace {

using namespace detail;
using namespace std::chrono_literals;
using brokers::ErrorClass;
using brokers::Message;
using brokers::PublishResult;
using Clock = std::chrono::steady_clock;

namespace wire = brokers::wire;

struct PublisherOptions {
  bool create_streams = false;
  std::chrono::milliseconds duplicate_window = 2min;  // of streams made by create_streams
  std::string name;                                   // connection name
  std::chrono::milliseconds stream_api_wait = 5s;     // js_AddStream
  // After a "no responders": how long the JetStream API may take to answer
  // the account info request that tells "no stream" from "no JetStream".
  std::chrono::milliseconds jetstream_check_wait = 2s;
  // Once the connection was lost, PubAcks already read from the socket are
  // still handed out; how long wait() keeps collecting them.
  std::chrono::milliseconds lost_connection_grace = 200ms;
  // How often wait() looks at the connection while PubAcks are missing.
  std::chrono::milliseconds connection_check_interval = 20ms;
  // Bound on waiting for an ack handler that cnats already started when the
  // batch is reclaimed (it only has to take a mutex: microseconds).
  std::chrono::milliseconds handler_drain_wait = 5s;
};

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
    throw txbox::UsageError(fmt::format(
        "broker URL option {}={} is not a positive duration: use e.g. 500ms, 120s, 2m or 1h",
        option, text));
  }
  return std::chrono::milliseconds(ms);
}

bool parse_bool(const std::string& text, const std::string& option) {
  if (text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  throw txbox::UsageError(
      fmt::format("broker URL option {}={} is not a boolean: use true or false", option, text));
}

PublisherOptions parse_options(const brokers::BrokerUrl& url,
                               const brokers::Properties& properties) {
  PublisherOptions options;
  for (const auto& [key, value] : url.query) {
    if (key == "create_streams") {
      options.create_streams = parse_bool(value, key);
    } else if (key == "duplicate_window") {
      options.duplicate_window = parse_duration(value, key);
    } else if (key == "name") {
      options.name = value;
    } else {
      throw txbox::UsageError(fmt::format(
          "unknown NATS broker URL option '{}' in '{}': supported are create_streams=true|false, "
          "duplicate_window=<duration>, name=<connection name>",
          key, display_servers(url)));
    }
  }
  for (const auto& [key, value] : properties) {
    if (key == "name") {
      options.name = value;
    } else {
      throw txbox::UsageError(fmt::format(
          "unknown NATS publisher property '{}': supported is name (put stream options in the "
          "broker URL query: ?create_streams=true&duplicate_window=2m)",
          key));
    }
  }
  return options;
}

std::size_t wire_size(const Message& m) {
  std::size_t bytes = m.payload.size() + m.destination.size() + 2 * m.message_id.size() + 64;
  if (m.key) bytes += m.key->size() + 16;
  for (const auto& [name, value] : m.headers) bytes += name.size() + value.size() + 4;
  return bytes;
}

int64_t to_ms(std::chrono::milliseconds d) { return std::max<int64_t>(d.count(), 1); }

struct Outcome {
  bool done = false;
  bool confirmed = false;
  PublishError error;
};

// One JetStream context and the state of the batch currently using it.
// Invariant: every message cnats holds in this context's pending map is in
// `inflight` (it is added before js_PublishMsgAsync). cnats calls the ack
// handler only for messages it takes out of that map, and
// js_PublishAsyncGetPendingList empties it; so once that list was taken and
// `inflight` is empty, no ack handler can touch this lane any more.
struct Lane {
  JsPtr js;
  std::mutex mutex;
  std::condition_variable cv;
  std::unordered_map<natsMsg*, std::size_t> inflight;  // sent, no outcome yet
  std::vector<Outcome> outcomes;                       // one per message of the batch
  // cnats 3.4.1 creates a context's pending map at its first async publish,
  // and js_PublishAsyncGetPendingList dereferences it unchecked: never ask
  // a context that has not published yet (a batch of refused subjects).
  bool published = false;

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error,
                     void* closure) noexcept {
    auto* lane = static_cast<Lane*>(closure);
    try {
      auto verdict = read_reply(ack, error);
      std::lock_guard lock(lane->mutex);
      auto it = lane->inflight.find(msg);
      if (it != lane->inflight.end()) {
        Outcome& outcome = lane->outcomes[it->second];
        lane->inflight.erase(it);
        outcome.done = true;
        outcome.confirmed = !verdict.has_value();
        if (verdict) outcome.error = std::move(*verdict);
        if (lane->inflight.empty()) lane->cv.notify_all();
      }
    } catch (...) {
      // Never let an exception cross into cnats (only allocation can throw
      // here). The message then stays in `inflight`; wait() reports it as
      // unacknowledged and the lane is retired rather than reused.
    }
    natsMsg_Destroy(msg);  // with an AckHandler the message is ours to destroy
  }
};

// What the publisher and every PendingPublish share; a PendingPublish keeps
// it alive, so a batch may outlive the Publisher object.
class Core {
 public:
  Core(const brokers::BrokerUrl& url, PublisherOptions options) : options_(std::move(options)) {
    conn_ =
        std::make_unique<Connection>(url, ConnectionOptions{.role = "publisher",
                                                            .name = options_.name,
                                                            .retry_initial = true,
                                                            .buffer_while_reconnecting = false});
  }

  ~Core() {
    // No PendingPublish is alive (each holds a reference), so every lane is
    // back in the pool. A retired lane may still see a late ack handler:
    // give it the drain time once more, and keep it (leak) if it is still busy.
    for (auto& lane : lanes_) {
      take_back_pending(*lane, Failure::no_pub_ack);
      if (!drain_handlers(*lane)) {
        spdlog::error(
            "NATS publisher: an ack handler of cnats is still running at shutdown; keeping its "
            "JetStream context alive (leaked) instead of freeing it under the handler");
        (void)lane.release();
      }
    }
    lanes_.clear();  // JetStream contexts before the connection
    conn_.reset();
  }

  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  const PublisherOptions& options() const { return options_; }
  Connection& connection() { return *conn_; }

  Lane& acquire() {
    std::lock_guard lock(pool_mutex_);
    if (!free_.empty()) {
      Lane* lane = free_.back();
      free_.pop_back();
      return *lane;
    }
    auto lane = std::make_unique<Lane>();
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = to_ms(options_.stream_api_wait);
    jo.PublishAsync.AckHandler = &Lane::on_ack;
    jo.PublishAsync.AckHandlerClosure = lane.get();
    lane->js = conn_->jetstream(&jo);
    lanes_.push_back(std::move(lane));
    return *lanes_.back();
  }

  // `reusable` = no ack handler can run for the lane any more. A lane that
  // is not stays out of the pool until the publisher is gone.
  void release(Lane& lane, bool reusable) {
    if (!reusable) return;
    std::lock_guard lock(pool_mutex_);
    free_.push_back(&lane);
  }

  // Takes back every message still waiting for a PubAck: cnats forgets it
  // (a late PubAck is dropped) and destroys nothing; it is destroyed here and
  // its outcome set to `failure`.
  static void take_back_pending(Lane& lane, Failure failure, const std::string& text = {}) {
    if (!lane.published) return;  // nothing pending, and cnats would crash on asking
    natsMsgList list{};
    if (js_PublishAsyncGetPendingList(&list, lane.js.get()) != NATS_OK) return;  // none
    {
      std::lock_guard lock(lane.mutex);
      for (int i = 0; i < list.Count; ++i) {
        auto it = lane.inflight.find(list.Msgs[i]);
        if (it == lane.inflight.end()) continue;
        Outcome& outcome = lane.outcomes[it->second];
        outcome.done = true;
        outcome.error = PublishError::of(failure, text);
        lane.inflight.erase(it);
      }
    }
    natsMsgList_Destroy(&list);
  }

  // Waits until the ack handlers cnats already started for this lane have
  // returned (see Lane). False if one is still busy after the drain wait.
  bool drain_handlers(Lane& lane) const {
    std::unique_lock lock(lane.mutex);
    return lane.cv.wait_for(lock, options_.handler_drain_wait,
                            [&] { return lane.inflight.empty(); });
  }

  // A real round trip to the JetStream API (account info).
  bool jetstream_answers(std::chrono::milliseconds timeout) noexcept {
    try {
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.Wait = to_ms(timeout);
      JsPtr js = conn_->jetstream(&jo);
      jsAccountInfo* raw = nullptr;
      jsErrCode code{};
      const natsStatus s = js_GetAccountInfo(&raw, js.get(), nullptr, &code);
      AccountInfoPtr info(raw);
      return s == NATS_OK;
    } catch (...) {
      return false;
    }
  }

  void ensure_streams(Lane& lane, std::span<const Message> messages) {
    std::vector<std::string> missing;
    {
      std::lock_guard lock(streams_mutex_);
      for (const auto& m : messages) {
        if (!ensured_.contains(m.destination) &&
            std::find(missing.begin(), missing.end(), m.destination) == missing.end() &&
            !refuse_subject(m.destination)) {
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

  void forget_stream(const std::string& subject) {
    std::lock_guard lock(streams_mutex_);
    ensured_.erase(subject);
  }

 private:
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
        std::chrono::duration_cast<std::chrono::nanoseconds>(options_.duplicate_window).count();
    jsStreamInfo* raw = nullptr;
    jsErrCode code{};
    const natsStatus s = js_AddStream(&raw, lane.js.get(), &cfg, nullptr, &code);
    StreamInfoPtr info(raw);
    if (s == NATS_OK) {
      spdlog::info(
          "NATS publisher: created JetStream stream '{}' for subject '{}' (file storage, "
          "duplicate window {} ms)",
          name, subject, options_.duplicate_window.count());
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

  PublisherOptions options_;
  std::unique_ptr<Connection> conn_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::vector<Lane*> free_;
  std::mutex streams_mutex_;
  std::set<std::string> ensured_;
};

class NatsPendingPublish final : public brokers::PendingPublish {
 public:
  NatsPendingPublish(std::shared_ptr<Core> core, std::span<const Message> messages)
      : core_(std::move(core)), messages_(messages), outcomes_(messages.size()) {}

  ~NatsPendingPublish() override {
    // Abandoned without wait(): take the batch back from cnats so no ack
    // handler touches it any more, and give the lane back.
    if (lane_ != nullptr) finish(Failure::no_pub_ack, {});
  }

  NatsPendingPublish(const NatsPendingPublish&) = delete;
  NatsPendingPublish& operator=(const NatsPendingPublish&) = delete;

  // Hands every message to cnats; see the file comment for the order rules.
  void send_all() {
    if (messages_.empty()) return;
    Connection& conn = core_->connection();
    if (!conn.connected()) {
      fail_all_unsent(
          fmt::format("the connection to {} is {}", conn.servers(), conn.status_text()));
      return;
    }
    lane_ = &core_->acquire();
    {
      std::lock_guard lock(lane_->mutex);
      lane_->outcomes.assign(messages_.size(), Outcome{});
      lane_->inflight.clear();
    }
    if (core_->options().create_streams) core_->ensure_streams(*lane_, messages_);

    reconnects_at_start_ = conn.reconnects();
    started_ = Clock::now();
    std::optional<std::string> connection_down;  // why, once a send failed for it
    for (std::size_t i = 0; i < messages_.size(); ++i) {
      // A reconnect between two sends (several servers: no pause before the
      // next one) would put this message on a new connection while earlier
      // ones died with the old one.
      if (!connection_down && conn.reconnects() != reconnects_at_start_) {
        connection_down =
            "the connection was re-established while the batch was being sent: earlier "
            "messages may have died with the old one";
      }
      if (connection_down) {
        set_outcome(i, PublishError::of(Failure::not_sent, *connection_down));
        continue;
      }
      const natsStatus s = send(i);
      if (is_connection_failure(s)) {
        connection_down = fmt::format("the connection is {}; the send failed with '{}'",
                                      conn.status_text(), natsStatus_GetText(s));
      }
    }
  }

  std::vector<PublishResult> wait(Clock::time_point deadline) override {
    if (results_) return *results_;  // wait() is called once; a second call gets the same answer
    if (lane_ != nullptr) collect(deadline);
    results_ = make_results();
    return *results_;
  }

 private:
  // While sending (the lane is ours).
  void set_outcome(std::size_t index, PublishError error) {
    std::lock_guard lock(lane_->mutex);
    lane_->outcomes[index].done = true;
    lane_->outcomes[index].error = std::move(error);
  }

  void fail_all_unsent(const std::string& why) {
    for (auto& o : outcomes_) {
      o.done = true;
      o.error = PublishError::reported(NATS_CONNECTION_DISCONNECTED, why);
    }
  }

  // Builds and sends message `index`. Returns the status of the send; local
  // refusals (bad subject, bad header) set the outcome and return NATS_OK
  // for the batch to go on.
  natsStatus send(std::size_t index) {
    const Message& m = messages_[index];
    if (auto refused = refuse_subject(m.destination)) {
      set_outcome(index, std::move(*refused));
      return NATS_OK;
    }
    natsMsg* raw = nullptr;
    natsStatus s = natsMsg_Create(&raw, m.destination.c_str(), nullptr, m.payload.data(),
                                  static_cast<int>(m.payload.size()));
    MsgPtr msg(raw);
    for (const auto& [name, value] : m.headers) {
      if (s != NATS_OK) break;
      if (name == wire::kMessageId || name == wire::kMessageKey || name == wire::kNatsMsgId) {
        continue;  // ours below are authoritative
      }
      if (natsMsgHeader_Add(raw, name.c_str(), value.c_str()) != NATS_OK) {
        set_outcome(index, PublishError::reported(
                               NATS_INVALID_ARG,
                               fmt::format("header '{}' cannot be sent as a NATS header (names "
                                           "need printable characters without ':', values no "
                                           "newlines)",
                                           name)));
        return NATS_OK;
      }
    }
    if (s == NATS_OK) s = natsMsgHeader_Set(raw, wire::kMessageId.data(), m.message_id.c_str());
    if (s == NATS_OK && m.key) s = natsMsgHeader_Set(raw, wire::kMessageKey.data(), m.key->c_str());
    if (s != NATS_OK) {
      const char* last = nats_GetLastError(nullptr);
      set_outcome(index, PublishError::reported(s, last != nullptr ? last : ""));
      return NATS_OK;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = m.message_id.c_str();  // Nats-Msg-Id: JetStream drops a re-publish in its window
    // No MaxWait: wait() bounds the wait with the caller's deadline and
    // takes back what has no PubAck by then.
    {
      std::lock_guard lock(lane_->mutex);
      lane_->inflight.emplace(raw, index);
    }
    natsMsg* handed = msg.release();
    s = js_PublishMsgAsync(lane_->js.get(), &handed, &po);
    if (s == NATS_OK || handed == nullptr) lane_->published = true;  // the library holds it
    if (s != NATS_OK && handed != nullptr) {
      // cnats took it out of its pending map again: it is ours, no ack
      // handler will run for it.
      MsgPtr back(handed);
      const char* last = nats_GetLastError(nullptr);
      auto error = PublishError::reported(
          s, is_connection_failure(s) ? "the connection is " + core_->connection().status_text()
                                      : std::string(last != nullptr ? last : ""));
      std::lock_guard lock(lane_->mutex);
      lane_->inflight.erase(handed);
      lane_->outcomes[index].done = true;
      lane_->outcomes[index].error = std::move(error);
      return s;
    }
    return NATS_OK;
  }

  bool connection_lost() const {
    const Connection& conn = core_->connection();
    return !conn.connected() || conn.reconnects() != reconnects_at_start_;
  }

  // Waits for the PubAcks until the deadline, or briefly after the
  // connection was lost (their PubAcks cannot come any more), then takes
  // the rest back.
  void collect(Clock::time_point deadline) {
    const auto& options = core_->options();
    bool lost = false;
    auto all_resolved = [&] { return lane_->inflight.empty(); };
    while (true) {
      const auto now = Clock::now();
      {
        std::unique_lock lock(lane_->mutex);
        if (all_resolved() || now >= deadline) break;
        lane_->cv.wait_until(lock, std::min(deadline, now + options.connection_check_interval),
                             all_resolved);
        if (all_resolved()) break;
      }
      // Outside the lane's mutex: this takes cnats's connection lock.
      if (!lost && connection_lost()) {
        lost = true;
        deadline = std::min(deadline, Clock::now() + options.lost_connection_grace);
      }
    }
    lost = lost || connection_lost();
    if (lost) {
      const Connection& conn = core_->connection();
      finish(Failure::connection_lost, fmt::format("the connection is {}", conn.status_text()));
    } else {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
      finish(Failure::no_pub_ack, fmt::format("waited {} ms", waited.count()));
    }
  }

  // Takes back what cnats still holds, lets started ack handlers return,
  // moves the outcomes out and gives the lane back.
  void finish(Failure unacknowledged, const std::string& text) {
    Core::take_back_pending(*lane_, unacknowledged, text);
    const bool drained = core_->drain_handlers(*lane_);
    {
      std::lock_guard lock(lane_->mutex);
      for (auto& [msg, index] : lane_->inflight) {
        // Only left when an ack handler is stuck: no outcome for this batch.
        (void)msg;
        Outcome& o = lane_->outcomes[index];
        o.done = true;
        o.error = PublishError::of(unacknowledged, text);
      }
      outcomes_.swap(lane_->outcomes);
      lane_->outcomes.clear();
    }
    if (!drained) {
      spdlog::error(
          "NATS publisher: a cnats ack handler did not return within {} ms; retiring its "
          "JetStream context",
          core_->options().handler_drain_wait.count());
    }
    core_->release(*lane_, drained);
    lane_ = nullptr;
  }

  std::vector<PublishResult> make_results() {
    std::vector<PublishResult> results(messages_.size());
    std::optional<bool> jetstream_available;
    for (std::size_t i = 0; i < outcomes_.size(); ++i) {
      Outcome& o = outcomes_[i];
      const Message& m = messages_[i];
      if (o.confirmed) {
        results[i].confirmed = true;
        continue;
      }
      if (!o.done) o.error = PublishError::of(Failure::no_pub_ack);  // cannot happen
      if (o.error.failure == Failure::reported && o.error.status == NATS_NO_RESPONDERS) {
        if (!jetstream_available) {
          jetstream_available = core_->jetstream_answers(core_->options().jetstream_check_wait);
        }
        o.error.jetstream_available = *jetstream_available;
        if (core_->options().create_streams) {
          o.error.creates_streams = true;
          core_->forget_stream(m.destination);
        }
      }
      results[i] = PublishResult{false, classify(o.error), describe(o.error, m.destination,
                                                                    wire_size(m))};
    }
    return results;
  }

  std::shared_ptr<Core> core_;
  std::span<const Message> messages_;
  Lane* lane_ = nullptr;  // while the batch is in cnats's hands
  std::vector<Outcome> outcomes_;  // before send_all() took a lane, and after finish()
  uint64_t reconnects_at_start_ = 0;
  Clock::time_point started_ = Clock::now();
  std::optional<std::vector<PublishResult>> results_;
};

class NatsPublisher final : public brokers::Publisher {
 public:
  NatsPublisher(const brokers::BrokerUrl& url, const brokers::Properties& properties)
      : core_(std::make_shared<Core>(url, parse_options(url, properties))) {}

  std::unique_ptr<brokers::PendingPublish> start(std::span<const Message> messages) override {
    auto pending = std::make_unique<NatsPendingPublish>(core_, messages);
    pending->send_all();
    return pending;
  }

  bool healthy() const override { return core_->connection().connected(); }

  bool probe(std::chrono::milliseconds timeout) override {
    return core_->jetstream_answers(timeout);
  }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties) {
  return std::make_unique<NatsPublisher>(url, properties);
}

}  // namespace txbox::nats
