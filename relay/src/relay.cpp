#include "txbox/relay/relay.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>
#include <thread>
#include <unordered_set>

#include "backoff.hpp"
#include "batch_plan.hpp"
#include "byte_budget.hpp"
#include "conninfo.hpp"
#include "db_errors.hpp"
#include "lane_balance.hpp"
#include "relay_metrics.hpp"
#include "txbox/metrics/http_endpoint.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/outbox/store.hpp"
#include "txbox/registry/registry.hpp"

namespace txbox::relay {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using outbox::Lane;

constexpr const char* kApplicationName = "txbox-relay";
// Lock waits of the relay's own statements (a row locked by someone else
// when a batch completes): give up and retry the batch rather than hang.
constexpr const char* kLockTimeout = "5s";
// While a worker idles, the process keeps the outbox trigger notifying for
// this long ahead, refreshed before it runs out (at the latest every
// kWakeupRefresh); a relay that stops refreshing (busy, or dead) stops
// costing writers a NOTIFY after this long.
constexpr auto kWakeupHorizon = 5s;
constexpr auto kWakeupRefresh = 2s;
// Publish-failure summaries of one worker: at most one log line per period.
constexpr auto kFailureLogPeriod = 5s;

std::string first_line(std::string_view text) {
  auto nl = text.find('\n');
  return std::string(nl == std::string_view::npos ? text : text.substr(0, nl));
}

// Reads a JSON object of string values as PostgreSQL prints a jsonb (the
// common case, and on every row: cheaper than a general JSON parser). False
// for anything else (the general parser then decides and explains).
bool read_flat_string_object(std::string_view text, brokers::Headers& out) {
  size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) ++i;
  };
  auto read_string = [&](std::string& value) {
    if (i >= text.size() || text[i] != '"') return false;
    ++i;
    while (i < text.size() && text[i] != '"') {
      if (text[i] == '\\') return false;  // escapes: the general parser
      value += text[i++];
    }
    if (i >= text.size()) return false;
    ++i;
    return true;
  };
  skip_space();
  if (i >= text.size() || text[i++] != '{') return false;
  skip_space();
  if (i < text.size() && text[i] == '}') return ++i, skip_space(), i == text.size();
  brokers::Headers headers;
  for (;;) {
    std::string name, value;
    skip_space();
    if (!read_string(name)) return false;
    skip_space();
    if (i >= text.size() || text[i++] != ':') return false;
    skip_space();
    if (!read_string(value)) return false;
    headers.emplace_back(std::move(name), std::move(value));
    skip_space();
    if (i < text.size() && text[i] == ',') {
      ++i;
      continue;
    }
    if (i < text.size() && text[i] == '}') break;
    return false;
  }
  ++i;
  skip_space();
  if (i != text.size()) return false;
  for (auto& header : headers) out.push_back(std::move(header));
  return true;
}

// Parses the headers column; returns an error text for a row that is not a
// JSON object of string values.
std::optional<std::string> parse_headers(const std::string& text, brokers::Headers& out) {
  if (read_flat_string_object(text, out)) return std::nullopt;
  nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object())
    return fmt::format("headers must be a JSON object of string values, got {}", text);
  for (auto& [name, value] : json.items()) {
    if (!value.is_string())
      return fmt::format("header '{}' is {} but headers must be JSON strings (write \"{}\": \"...\")", name,
                         value.type_name(), name);
    out.emplace_back(name, value.get<std::string>());
  }
  return std::nullopt;
}

void sleep_for(const std::stop_token& stop, std::chrono::milliseconds duration) {
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  cv.wait_for(lock, stop, duration, [] { return false; });
}

// What to do about a libpqxx exception. libpqxx 6 gives SQLSTATEs only to
// sql_error; its other failures are a lost session or a rolled-back
// transaction (serialization failure, deadlock), or unknown: retried.
DbFailure classify(const pqxx::failure& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) || dynamic_cast<const pqxx::in_doubt_error*>(&e))
    return DbFailure::reconnect;
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e)) return DbFailure::retry;
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) return classify_sqlstate(sql->sqlstate());
  return DbFailure::reconnect;
}

constexpr const char* kPoolingFix =
    "txbox-relay is connected through a pooling proxy that shares server sessions between clients (such as "
    "PgBouncer with pool_mode = transaction or statement), but lane ownership needs session advisory locks of "
    "its own; connect the relay directly to PostgreSQL, or through a pool in session mode";

// A prepared statement that "already exists" in a fresh session was made by
// another client of the same server session: a pooler shares it.
void throw_if_pooled(const pqxx::failure& e) {
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql && sql->sqlstate() == "42P05")
    throw SessionPoolingError(fmt::format("{} ({})", kPoolingFix, first_line(e.what())));
}

std::string describe(const pqxx::failure& e) {
  std::string what = first_line(e.what());
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql && !sql->sqlstate().empty())
    what += fmt::format(" (SQLSTATE {})", sql->sqlstate());
  else if (dynamic_cast<const pqxx::deadlock_detected*>(&e))
    what += " (SQLSTATE 40P01)";
  else if (dynamic_cast<const pqxx::serialization_failure*>(&e))
    what += " (SQLSTATE 40001)";
  return what;
}

// A wake-up for one thread: notify() makes the next (or current) wait return.
class Signal {
 public:
  void notify() {
    {
      std::lock_guard lock(mutex_);
      flag_ = true;
    }
    cv_.notify_all();
  }
  // Waits until notified, `until` or `stop`; consumes the notification.
  void wait_until(Clock::time_point until, std::stop_token stop) {
    std::unique_lock lock(mutex_);
    cv_.wait_until(lock, stop, until, [&] { return flag_; });
    flag_ = false;
  }
  bool take() {
    std::lock_guard lock(mutex_);
    return std::exchange(flag_, false);
  }

 private:
  std::mutex mutex_;
  std::condition_variable_any cv_;
  bool flag_ = false;
};

// What a worker and the coordinator share.
struct WorkerSlot {
  Signal signal;
  std::mutex mutex;
  std::vector<Lane> owned;             // lanes the worker holds (written by the worker)
  std::optional<LaneChange> change;    // posted by the coordinator, taken by the worker
  std::atomic<bool> idle{true};        // nothing to claim and nothing in flight
  std::atomic<uint64_t> idle_entries{0};
  std::atomic<int64_t> heartbeat{0};   // steady clock, ns: the worker's loop is alive
};

}  // namespace

struct Relay::State {
  RelayOptions options;
  RelayConninfo conninfo;
  std::shared_ptr<brokers::Publisher> publisher;
  std::unique_ptr<ByteBudget> budget;
  std::vector<std::unique_ptr<WorkerSlot>> slots;
  int coordinator_event = -1;  // eventfd: workers poke the coordinator

  std::atomic<uint64_t> published{0}, failed{0}, dead_lettered{0}, batches{0}, held_back{0}, outages{0};
  RelayMetrics metrics;

  // Backend pids of the workers' sessions: two workers on one backend means
  // a pooler multiplexes them onto one server session.
  std::mutex sessions_mutex;
  std::unordered_set<int> session_pids;

  void register_session(int pid) {
    std::lock_guard lock(sessions_mutex);
    if (!session_pids.insert(pid).second)
      throw SessionPoolingError(
          fmt::format("two relay workers got the same PostgreSQL session (backend pid {}): {}", pid, kPoolingFix));
  }
  void forget_session(int pid) {
    std::lock_guard lock(sessions_mutex);
    session_pids.erase(pid);
  }

  // The broker as a whole: down (outage) or up, shared by all workers so
  // that it is logged once per change and probed by one worker at a time.
  std::mutex outage_mutex;
  bool broker_down = false;
  bool probing = false;
  std::condition_variable probe_done;
  Clock::time_point outage_until{};
  std::unique_ptr<Backoff> outage_backoff;
  Clock::time_point last_probe{};
  bool last_probe_up = true;

  ~State() {
    if (coordinator_event >= 0) ::close(coordinator_event);
  }

  // /healthz: every worker's loop has come round within the deadline (its
  // longest legitimate wait is a batch's confirmations, a probe and the
  // outage backoff, plus a minute of slack).
  metrics::CheckResult health() const {
    const auto deadline = options.publish_timeout + options.probe_timeout + options.outage_backoff_cap + 60s;
    const auto now = Clock::now().time_since_epoch().count();
    for (size_t i = 0; i < slots.size(); ++i) {
      const auto age = std::chrono::nanoseconds(now - slots[i]->heartbeat.load());
      if (age > deadline)
        return {false, nlohmann::json{{"healthy", false},
                                      {"failing", fmt::format("worker {}", i)},
                                      {"reason", fmt::format("its loop has not come round for {} s (deadline {} s)",
                                                             std::chrono::duration_cast<std::chrono::seconds>(age).count(),
                                                             std::chrono::duration_cast<std::chrono::seconds>(deadline).count())}}
                           .dump()};
    }
    return {true, R"({"healthy":true})"};
  }

  // /readyz: PostgreSQL answers, the schema is at this build's version, the
  // broker is up. Checked at most once a second, on a connection of its own.
  metrics::CheckResult ready() {
    std::lock_guard lock(ready_mutex);
    if (Clock::now() - ready_checked < 1s) return ready_result;
    auto failing = [](const char* check, const std::string& reason) {
      return metrics::CheckResult{
          false, nlohmann::json{{"ready", false}, {"failing", check}, {"reason", one_line(reason)}}.dump()};
    };
    try {
      if (!ready_conn || !ready_conn->is_open()) ready_conn = std::make_unique<pqxx::connection>(conninfo.conninfo);
      outbox::require_schema(*ready_conn, options.schema);
      bool down;
      {
        std::lock_guard outage_lock(outage_mutex);
        down = broker_down;
      }
      if (down || !publisher->healthy())
        ready_result = failing("broker", down ? "the broker is down (the relay is probing it with backoff)"
                                              : "the broker client has no working connection");
      else
        ready_result = {true, R"({"ready":true})"};
    } catch (const outbox::SchemaError& e) {
      ready_result = failing("schema", e.what());
    } catch (const std::exception& e) {
      ready_conn.reset();
      ready_result = failing("database", e.what());
    }
    ready_checked = Clock::now();
    return ready_result;
  }
  std::mutex ready_mutex;
  std::unique_ptr<pqxx::connection> ready_conn;
  Clock::time_point ready_checked{};
  metrics::CheckResult ready_result;

  static std::string one_line(std::string text) {
    for (char& c : text)
      if (c == '\n' || c == '\r') c = ' ';
    while (!text.empty() && text.back() == ' ') text.pop_back();
    return text;
  }

  void poke_coordinator() const {
    uint64_t one = 1;
    if (coordinator_event >= 0) (void)!::write(coordinator_event, &one, sizeof one);
  }

  // Asks the broker whether it is down as a whole. One probe at a time:
  // workers that need the answer meanwhile wait for it, and an answer
  // serves everyone for a second.
  bool broker_unavailable() {
    std::unique_lock lock(outage_mutex);
    if (Clock::now() - last_probe < 1s) return !last_probe_up;
    if (probing) {
      probe_done.wait(lock, [&] { return !probing; });
      return !last_probe_up;
    }
    probing = true;
    lock.unlock();
    const bool up = publisher->probe(options.probe_timeout);
    lock.lock();
    probing = false;
    last_probe = Clock::now();
    last_probe_up = up;
    probe_done.notify_all();
    return !up;
  }

  void enter_outage(const std::string& reason) {
    std::lock_guard lock(outage_mutex);
    if (!broker_down) {
      broker_down = true;
      metrics.broker_up.set(0);
      ++outages;
      spdlog::error("broker unavailable: {}; rows stay in the outbox, probing with backoff (attempts are "
                    "not counted while the broker is down)",
                    reason);
    }
    outage_until = Clock::now() + outage_backoff->next();
  }

  void leave_outage() {
    std::lock_guard lock(outage_mutex);
    if (broker_down) {
      broker_down = false;
      metrics.broker_up.set(1);
      spdlog::info("broker available again: publishing resumed");
    }
    outage_backoff->reset();
  }

  // While the broker is down: when to look again (nullopt: it is not down).
  std::optional<Clock::time_point> outage_wait() {
    std::lock_guard lock(outage_mutex);
    if (!broker_down) return std::nullopt;
    return outage_until;
  }

  // One worker probes once the backoff has passed; true when it is up
  // again. nullopt: another worker is probing right now.
  std::optional<bool> probe_after_outage() {
    {
      std::lock_guard lock(outage_mutex);
      if (probing) return std::nullopt;
      if (!broker_down || Clock::now() < outage_until) return !broker_down;
      probing = true;
    }
    const bool up = publisher->probe(options.probe_timeout);
    {
      std::lock_guard lock(outage_mutex);
      probing = false;
      last_probe = Clock::now();
      last_probe_up = up;
    }
    probe_done.notify_all();
    if (up) {
      leave_outage();
    } else {
      enter_outage("the broker does not answer a probe");
    }
    return up;
  }
};

namespace {

// One relay worker: its own PostgreSQL session, its own lanes.
class Worker {
 public:
  Worker(Relay::State& state, int index)
      : s_(state), o_(state.options), slot_(*state.slots[static_cast<size_t>(index)]), index_(index) {}

  void run(std::stop_token stop) {
    Backoff db_backoff(200ms, 2.0, 10s);
    std::optional<std::string> trouble;  // the database problem being retried, logged once
    bool reconnecting = false;
    for (;;) {
      slot_.heartbeat.store(Clock::now().time_since_epoch().count());
      if (stop.stop_requested() && (in_flight_.empty() || !conn_)) break;
      try {
        if (!conn_) connect();
        if (stop.stop_requested()) {  // finish what is in flight, claim nothing new
          if (!in_flight_.empty()) settle_oldest();
          continue;
        }
        apply_lane_change();
        if (!unsettled_.empty() && Clock::now() >= next_unsettled_try_) {
          complete({});
          continue;
        }
        if (wait_out_outage(stop)) continue;
        if (should_claim() && claim_and_start(stop)) continue;
        if (!in_flight_.empty()) {
          settle_oldest();
        } else {
          idle_wait(stop);
        }
        if (trouble) {
          if (reconnecting)
            spdlog::info("worker {}: reconnected to PostgreSQL", index_);
          else
            spdlog::info("worker {}: PostgreSQL statements succeed again", index_);
          trouble.reset();
          reconnecting = false;
          db_backoff.reset();
        }
      } catch (const SessionPoolingError&) {
        drop_session();
        throw;
      } catch (const pqxx::failure& e) {
        throw_if_pooled(e);
        const DbFailure failure = classify(e);
        const std::string what = describe(e);
        if (failure == DbFailure::fatal)
          throw std::runtime_error(
              fmt::format("worker {}: PostgreSQL error that retrying cannot fix: {}", index_, what));
        if (failure == DbFailure::reconnect) reconnecting = true;
        on_db_error(failure, what, trouble, db_backoff, stop);
      }
    }
    if (session_pid_ != 0) s_.forget_session(session_pid_);
    slot_.idle = true;
  }

 private:
  // A row the broker settled (or that is to be retried or dead-lettered)
  // whose completion found it locked by another session: tried again until
  // the lock is gone. Meanwhile it is not claimed again, and a row that is
  // to be retried keeps its key's later rows back.
  struct Unsettled {
    outbox::RowVersion row;
    RowAction action = RowAction::remove;
    std::optional<std::string> key;
    std::string destination;      // for the metrics
    outbox::TimePoint created_at;  // for the metrics
    std::chrono::milliseconds delay{0};
    std::string error_class;
    std::string reason;
  };

  // A batch handed to the broker.
  struct Batch {
    std::vector<outbox::ClaimedRow> rows;
    std::vector<std::optional<std::string>> refused;  // per row: why it was not sent
    std::vector<brokers::Message> messages;           // the rows that were sent
    std::vector<size_t> message_row;                  // messages[i] came from rows[message_row[i]]
    std::unique_ptr<brokers::PendingPublish> pending;
    std::string start_error;  // the publisher refused the whole batch
    Clock::time_point deadline;
    int64_t bytes = 0;  // reserved in the byte budget
    Clock::time_point claimed_at, started_at;
  };

  void on_db_error(DbFailure failure, const std::string& what, std::optional<std::string>& trouble,
                   Backoff& backoff, const std::stop_token& stop) {
    if (failure == DbFailure::reconnect) drop_session();
    if (!trouble) {
      spdlog::warn("worker {}: PostgreSQL {} ({}); {} with backoff", index_,
                   failure == DbFailure::reconnect ? "went away" : "failed a statement", what,
                   failure == DbFailure::reconnect ? "reconnecting" : "retrying");
    }
    trouble = what;
    sleep_for(stop, backoff.next());
  }

  void connect() {
    auto conn = std::make_unique<pqxx::connection>(s_.conninfo.conninfo);
    {
      pqxx::nontransaction tx(*conn);
      tx.exec(s_.conninfo.session_setup_sql() + fmt::format("; SET lock_timeout = '{}'", kLockTimeout));
    }
    auto store = std::make_unique<outbox::OutboxStore>(*conn, o_.schema);
    const int pid = store->join_fleet();
    s_.register_session(pid);
    conn_ = std::move(conn);
    store_ = std::move(store);
    session_pid_ = pid;
    set_lanes({});
  }

  // The session is gone: so are its lanes, and the batches in flight cannot
  // be completed on it. Their rows stay in the outbox and go again.
  void drop_session() {
    for (auto& batch : in_flight_) s_.budget->release(batch.bytes);
    in_flight_.clear();  // PendingPublish destructors abandon them safely
    unsettled_.clear();  // they go again, from the outbox
    if (session_pid_ != 0) s_.forget_session(std::exchange(session_pid_, 0));
    store_.reset();
    conn_.reset();
    set_lanes({});
  }

  void set_lanes(std::vector<Lane> lanes) {
    lanes_ = std::move(lanes);
    std::lock_guard lock(slot_.mutex);
    slot_.owned = lanes_;
  }

  std::bitset<outbox::kLaneCount> lanes_in_flight() const {
    std::bitset<outbox::kLaneCount> busy;
    for (const auto& batch : in_flight_)
      for (const auto& row : batch.rows) busy.set(static_cast<size_t>(row.row.lane));
    return busy;
  }

  void apply_lane_change() {
    std::optional<LaneChange> change;
    {
      std::lock_guard lock(slot_.mutex);
      change.swap(slot_.change);
    }
    if (!change) return;
    std::vector<Lane> release;
    const auto busy = lanes_in_flight();
    for (Lane lane : lanes_) {
      if (static_cast<int>(release.size()) >= change->release) break;
      if (!busy.test(static_cast<size_t>(lane))) release.push_back(lane);
    }
    std::vector<Lane> acquire;
    for (Lane lane : change->acquire)
      if (std::find(lanes_.begin(), lanes_.end(), lane) == lanes_.end()) acquire.push_back(lane);
    if (acquire.empty() && release.empty()) return;
    auto acquired = store_->change_lanes(acquire, release);
    std::vector<Lane> lanes;
    for (Lane lane : lanes_)
      if (std::find(release.begin(), release.end(), lane) == release.end()) lanes.push_back(lane);
    lanes.insert(lanes.end(), acquired.begin(), acquired.end());
    std::sort(lanes.begin(), lanes.end());
    spdlog::debug("worker {}: lanes +{} -{} = {}", index_, acquired.size(), release.size(), lanes.size());
    set_lanes(std::move(lanes));
    last_claim_full_ = true;  // new lanes may have rows
  }

  // While the broker is down: settle what is in flight, wait for the
  // backoff, let one worker probe. True when this iteration is used up.
  bool wait_out_outage(const std::stop_token& stop) {
    auto until = s_.outage_wait();
    if (!until) return false;
    if (!in_flight_.empty()) {
      settle_oldest();
      return true;
    }
    if (Clock::now() < *until) {
      slot_.signal.wait_until(*until, stop);
      return true;
    }
    const std::optional<bool> up = s_.probe_after_outage();
    if (!up) {  // another worker is asking the broker: its answer comes soon
      slot_.signal.wait_until(Clock::now() + 50ms, stop);
      return true;
    }
    if (!*up) return true;
    last_claim_full_ = true;
    return false;
  }

  bool should_claim() {
    if (lanes_.empty()) return false;
    if (static_cast<int>(in_flight_.size()) >= o_.batches_in_flight) return false;
    // With a batch in flight, claim another only when more rows may be due:
    // the last claim was full, or a wake-up came since.
    if (!in_flight_.empty()) return last_claim_full_ || slot_.signal.take();
    return true;
  }

  // Claims a batch and hands it to the broker. False when nothing was due.
  bool claim_and_start(const std::stop_token& stop) {
    ByteBudget& budget = *s_.budget;
    const int64_t share = std::max<int64_t>(budget.limit() / std::max(o_.workers, 1), 1);
    int64_t reserved = budget.try_reserve(share);
    if (reserved == 0) {
      if (!in_flight_.empty()) return false;  // settle ours first
      budget.wait_for_room(stop);
      return true;
    }
    // Lanes with a batch in flight are left out: a key is never in two
    // batches at once, so an earlier row that fails cannot have a later row
    // of its key already on the broker from the next batch.
    std::vector<Lane> order;
    order.reserve(lanes_.size());
    const auto busy = lanes_in_flight();
    for (Lane lane : lanes_)
      if (!busy.test(static_cast<size_t>(lane))) order.push_back(lane);
    if (order.empty()) {
      budget.release(reserved);
      last_claim_full_ = false;
      return false;
    }
    std::rotate(order.begin(), order.begin() + static_cast<long>(rotation_++ % order.size()), order.end());
    // Rows waiting to be completed (locked by another session) are not
    // claimed again, and one waiting to be retried holds its key back.
    std::vector<int64_t> exclude_ids;
    std::vector<std::string> exclude_keys;
    for (const auto& u : unsettled_) {
      exclude_ids.push_back(u.row.id);
      if (u.action == RowAction::retry && u.key) exclude_keys.push_back(*u.key);
    }
    outbox::Claim claim;
    const auto claimed_at = Clock::now();
    try {
      claim = store_->claim({order, o_.batch_size, reserved, exclude_ids, exclude_keys});
    } catch (...) {
      budget.release(reserved);
      throw;
    }
    if (claim.backend_pid != session_pid_) {
      budget.release(reserved);
      throw SessionPoolingError(fmt::format("the PostgreSQL session changed between two statements (backend pid "
                                            "{} became {}): {}",
                                            session_pid_, claim.backend_pid, kPoolingFix));
    }
    if (claim.rows.empty()) {
      budget.release(reserved);
      last_claim_full_ = false;
      next_due_in_ = claim.next_due_in;
      return false;
    }
    next_due_in_.reset();
    Batch batch;
    batch.claimed_at = claimed_at;
    if (!claim.rows.front().payload) {
      // A row larger than this claim's share: it goes alone, once its
      // bytes are free (all of them, when it is larger than the budget).
      budget.release(reserved);
      if (!in_flight_.empty()) return false;
      outbox::ClaimedRow& row = claim.rows.front();
      if (!budget.reserve(row.payload_bytes, stop)) return false;
      batch.bytes = row.payload_bytes;
      std::optional<std::string> payload;
      try {
        payload = store_->fetch_payload(row.row, row.payload_bytes);
      } catch (...) {
        budget.release(batch.bytes);
        throw;
      }
      if (!payload) {  // changed or gone meanwhile: claim again
        budget.release(batch.bytes);
        return true;
      }
      row.payload = std::move(*payload);
      claim.rows.resize(1);
      last_claim_full_ = true;
    } else {
      int64_t used = 0;
      for (const auto& row : claim.rows) used += row.payload_bytes;
      budget.release(reserved - std::min(used, reserved));
      batch.bytes = std::min(used, reserved);
      last_claim_full_ = claim.full;
    }
    batch.rows = std::move(claim.rows);
    start(batch);
    in_flight_.push_back(std::move(batch));
    return true;
  }

  void start(Batch& batch) {
    const size_t n = batch.rows.size();
    batch.refused.resize(n);
    batch.messages.reserve(n);
    batch.message_row.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      auto& row = batch.rows[i];
      brokers::Message message;
      message.message_id = row.message_id;
      message.destination = row.destination;
      message.key = row.key;
      if (row.destination.empty()) {
        batch.refused[i] = "destination is empty: set the destination column to a topic, queue, subject or stream";
        continue;
      }
      if (auto error = parse_headers(row.headers_json, message.headers)) {
        batch.refused[i] = std::move(error);
        continue;
      }
      message.payload = std::move(*row.payload);
      row.payload.reset();
      batch.messages.push_back(std::move(message));
      batch.message_row.push_back(i);
    }
    batch.started_at = Clock::now();
    batch.deadline = batch.started_at + o_.publish_timeout;
    if (batch.messages.empty()) return;
    try {
      batch.pending = s_.publisher->start(batch.messages);
    } catch (const std::exception& e) {
      batch.start_error = e.what();
    }
  }

  void settle_oldest() {
    Batch batch = std::move(in_flight_.front());
    in_flight_.pop_front();
    struct ReleaseBytes {
      ByteBudget& budget;
      int64_t bytes;
      ~ReleaseBytes() { budget.release(bytes); }
    } release{*s_.budget, batch.bytes};

    std::vector<brokers::PublishResult> sent;
    if (batch.pending) {
      sent = batch.pending->wait(batch.deadline);
      batch.pending.reset();
      s_.metrics.publish_duration.observe(Clock::now() - batch.started_at);
    } else if (!batch.messages.empty()) {
      sent.assign(batch.messages.size(),
                  {false, brokers::ErrorClass::outage,
                   fmt::format("the publisher could not take the batch: {}", batch.start_error)});
    }
    sent.resize(batch.messages.size(), {false, brokers::ErrorClass::transient, "no result from the publisher"});
    const size_t n = batch.rows.size();
    std::vector<brokers::PublishResult> results(n);
    for (size_t i = 0; i < n; ++i)
      if (batch.refused[i]) results[i] = {false, brokers::ErrorClass::permanent, *batch.refused[i]};
    for (size_t m = 0; m < sent.size(); ++m) results[batch.message_row[m]] = sent[m];

    const bool broker_down = needs_probe(sent) && s_.broker_unavailable();
    std::vector<PlanRow> plan_rows(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& row = batch.rows[i];
      plan_rows[i] = {row.key ? &*row.key : nullptr, row.attempts, row.first_failed_at};
    }
    const BatchPlan plan = plan_batch(plan_rows, results, o_.retry, std::chrono::system_clock::now(),
                                      broker_down, [this] { return jitter_(); });

    std::vector<Unsettled> decided;
    std::vector<size_t> dead_rows;
    for (size_t i = 0; i < n; ++i) {
      const RowDecision& d = plan.rows[i];
      const auto& row = batch.rows[i];
      switch (d.action) {
        case RowAction::remove:
        case RowAction::retry:
          decided.push_back({row.row, d.action, row.key, row.destination, row.created_at, d.delay, {}, d.reason});
          break;
        case RowAction::dead_letter:
          decided.push_back({row.row, d.action, row.key, row.destination, row.created_at, {},
                             brokers::to_string(d.error_class), d.reason});
          dead_rows.push_back(i);
          break;
        case RowAction::held_back:
        case RowAction::untouched:
          break;
      }
    }
    if (o_.publish_dead_letters && !dead_rows.empty()) publish_dead_letters(batch, plan, dead_rows);
    for (size_t i = 0; i < n; ++i)
      if (!results[i].confirmed)
        failures_.at(batch.rows[i].destination, broker_down ? "outage" : brokers::to_string(results[i].error_class))
            .inc();
    const outbox::CompletionCounts counts = complete(std::move(decided));
    s_.metrics.batch_duration.observe(Clock::now() - batch.claimed_at);

    s_.failed += plan.retried + plan.dead_lettered;
    s_.held_back += plan.held_back;
    (void)counts;
    ++s_.batches;
    for (size_t i : dead_rows) {
      const auto& row = batch.rows[i];
      spdlog::error("worker {}: message {} to '{}' dead-lettered ({} error): {}", index_, row.message_id,
                    row.destination, brokers::to_string(plan.rows[i].error_class), plan.rows[i].reason);
    }
    if (plan.outage) {
      const auto first = std::find_if(sent.begin(), sent.end(), [](const auto& r) { return !r.confirmed; });
      s_.enter_outage(first != sent.end() ? first->error : "no confirmation");
    } else {
      if (plan.removed > 0) s_.leave_outage();
      if (plan.retried > 0 || plan.untouched > 0) report_failures(plan, results);
    }
  }

  // Completes the rows decided now and those left earlier because another
  // session held a lock on them, in one statement.
  outbox::CompletionCounts complete(std::vector<Unsettled> decided) {
    decided.insert(decided.end(), std::make_move_iterator(unsettled_.begin()),
                   std::make_move_iterator(unsettled_.end()));
    unsettled_.clear();
    outbox::Completion completion;
    for (const auto& u : decided) {
      switch (u.action) {
        case RowAction::remove: completion.published.push_back(u.row); break;
        case RowAction::retry: completion.retries.push_back({u.row, u.delay, u.reason}); break;
        case RowAction::dead_letter: completion.dead_letters.push_back({u.row, u.error_class, u.reason}); break;
        default: break;
      }
    }
    if (completion.empty()) return {};
    // If this throws nothing was applied: the rows are claimed and go again.
    const outbox::CompletionCounts counts = store_->complete(completion);
    s_.published += counts.deleted;
    s_.dead_lettered += counts.dead_lettered;
    const auto now = std::chrono::system_clock::now();
    for (auto& u : decided) {
      if (std::find(counts.locked.begin(), counts.locked.end(), u.row.id) == counts.locked.end()) {
        if (u.action == RowAction::remove) {
          published_.at(u.destination).inc();
          s_.metrics.message_delay.observe(now - u.created_at);
        } else if (u.action == RowAction::dead_letter) {
          dead_letters_.at(u.destination).inc();
        }
        continue;
      }
      if (!locked_reported_.contains(u.row.id)) {
        spdlog::warn("worker {}: outbox row {} is locked by another session (an open transaction holds it); "
                     "its {} waits until the lock is gone, the other rows go on",
                     index_, u.row.id,
                     u.action == RowAction::remove ? "deletion (it was published)" : to_string(u.action));
        locked_reported_.insert(u.row.id);
      }
      unsettled_.push_back(std::move(u));
    }
    if (unsettled_.empty()) locked_reported_.clear();
    next_unsettled_try_ = Clock::now() + 1s;
    return counts;
  }

  // One warning per period with what failed, not one per batch.
  void report_failures(const BatchPlan& plan, const std::vector<brokers::PublishResult>& results) {
    failures_since_log_ += plan.retried + plan.untouched;
    const auto now = Clock::now();
    if (now - last_failure_log_ < kFailureLogPeriod) return;
    const auto first = std::find_if(results.begin(), results.end(), [](const auto& r) { return !r.confirmed; });
    spdlog::warn("worker {}: {} messages failed and will be retried since the last report (first: {})", index_,
                 failures_since_log_, first != results.end() ? first->error : "?");
    failures_since_log_ = 0;
    last_failure_log_ = now;
  }

  // Also publishes dead letters to "<destination>.dlq" (the table keeps
  // them even when this fails).
  void publish_dead_letters(const Batch& batch, const BatchPlan& plan, const std::vector<size_t>& dead_rows) {
    std::vector<brokers::Message> letters;
    const auto now = std::chrono::system_clock::now();
    for (size_t i : dead_rows) {
      const auto& row = batch.rows[i];
      brokers::Message letter;
      letter.message_id = row.message_id;
      letter.destination = (row.destination.empty() ? std::string("txbox") : row.destination) + ".dlq";
      letter.key = row.key;
      auto sent = std::find(batch.message_row.begin(), batch.message_row.end(), i);
      if (sent != batch.message_row.end()) {
        const auto& message = batch.messages[static_cast<size_t>(sent - batch.message_row.begin())];
        letter.payload = message.payload;
        letter.headers = message.headers;
      } else {
        if (row.payload) letter.payload = *row.payload;
        parse_headers(row.headers_json, letter.headers);  // best effort for bad rows
      }
      brokers::wire::add_dead_letter_headers(
          letter.headers, {.error = plan.rows[i].reason,
                           .error_class = brokers::to_string(plan.rows[i].error_class),
                           .attempts = row.attempts + 1,
                           .original_destination = row.destination,
                           .at = now});  // no position: the row was never in the broker
      letters.push_back(std::move(letter));
    }
    auto published = s_.publisher->publish(letters, o_.publish_timeout);
    for (size_t k = 0; k < published.size(); ++k)
      if (!published[k].confirmed)
        spdlog::warn("worker {}: dead letter {} not published to {}: {} (it is kept in txbox.dead_letters)",
                     index_, letters[k].message_id, letters[k].destination, published[k].error);
  }

  void idle_wait(const std::stop_token& stop) {
    slot_.idle = true;
    ++slot_.idle_entries;
    s_.poke_coordinator();
    // Woken by the coordinator (a notification, due rows found by its
    // poll, a lane change), or when the earliest waiting row is due.
    auto until = Clock::now() + 1h;
    if (next_due_in_) until = std::min(until, Clock::now() + *next_due_in_ + 2ms);
    if (!unsettled_.empty()) until = std::min(until, next_unsettled_try_);
    slot_.signal.wait_until(until, stop);
    slot_.idle = false;
    last_claim_full_ = true;
  }

  Relay::State& s_;
  const RelayOptions& o_;
  WorkerSlot& slot_;
  const int index_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<outbox::OutboxStore> store_;
  int session_pid_ = 0;
  std::vector<Lane> lanes_;
  size_t rotation_ = 0;
  std::deque<Batch> in_flight_;
  bool last_claim_full_ = true;
  std::optional<std::chrono::milliseconds> next_due_in_;
  Jitter jitter_;
  uint64_t failures_since_log_ = 0;
  DestinationCounters published_{s_.metrics.published}, failures_{s_.metrics.failures},
      dead_letters_{s_.metrics.dead_letters};
  Clock::time_point last_failure_log_{};
  std::vector<Unsettled> unsettled_;
  Clock::time_point next_unsettled_try_{};
  std::unordered_set<int64_t> locked_reported_;
};

// Receives the outbox trigger's notifications on the coordinator's session.
class WakeupReceiver final : public pqxx::notification_receiver {
 public:
  WakeupReceiver(pqxx::connection_base& conn, const std::string& channel, std::function<void()> on_wakeup)
      : pqxx::notification_receiver(conn, channel), on_wakeup_(std::move(on_wakeup)) {}
  void operator()(const std::string&, int) override { on_wakeup_(); }

 private:
  std::function<void()> on_wakeup_;
};

// One per process: LISTENs for wake-ups, registers the process for them
// while a worker idles, balances lanes and polls for due rows as the
// fallback, and ends a drain.
class Coordinator {
 public:
  Coordinator(Relay::State& state, std::stop_source& done)
      : s_(state), o_(state.options), done_(done),
        seed_(static_cast<uint32_t>(std::random_device{}())),
        idle_entries_seen_(state.slots.size(), 0) {}

  void run(std::stop_token stop) {
    Backoff backoff(200ms, 2.0, 10s);
    bool trouble = false;
    auto next_tick = Clock::now();
    while (!stop.stop_requested()) {
      try {
        if (!conn_) connect();
        if (Clock::now() >= next_tick) {
          tick();
          next_tick = Clock::now() + o_.poll_interval;
        } else {
          manage_wakeups();
        }
        if (trouble) {
          spdlog::info("relay coordinator: PostgreSQL works again");
          trouble = false;
          backoff.reset();
        }
        // Wake in time to refresh the wake-up horizon while it is wanted.
        auto wake = next_tick;
        if (wakeups_until_) wake = std::min(wake, *wakeups_until_ - (kWakeupHorizon - kWakeupRefresh));
        wait_for_event(stop, wake);
      } catch (const pqxx::failure& e) {
        throw_if_pooled(e);
        // Connection lost or a statement failed: the workers go on by
        // themselves meanwhile; only wake-ups and balancing pause.
        receiver_.reset();
        store_.reset();
        conn_.reset();
        wakeups_until_.reset();
        if (!trouble)
          spdlog::warn("relay coordinator: PostgreSQL problem ({}); retrying with backoff", first_line(e.what()));
        trouble = true;
        sleep_for(stop, backoff.next());
      }
    }
    // The wake-up horizon runs out by itself.
  }

 private:
  void connect() {
    auto conn = std::make_unique<pqxx::connection>(s_.conninfo.conninfo);
    {
      pqxx::nontransaction tx(*conn);
      tx.exec(s_.conninfo.session_setup_sql());
    }
    auto store = std::make_unique<outbox::OutboxStore>(*conn, o_.schema);
    std::unique_ptr<WakeupReceiver> receiver;
    // A notification wakes every worker: idle ones claim, busy ones claim
    // their next batch while the current one is confirmed.
    if (o_.wakeup == "notify") receiver = std::make_unique<WakeupReceiver>(*conn, store->wakeup_channel(), [this] { wake_all_workers(); });
    conn_ = std::move(conn);
    store_ = std::move(store);
    receiver_ = std::move(receiver);
    wakeups_until_.reset();
  }

  void wake_idle_workers() {
    for (auto& slot : s_.slots)
      if (slot->idle) slot->signal.notify();
  }

  void wake_all_workers() {
    for (auto& slot : s_.slots) slot->signal.notify();
  }

  // Notifications are wanted while some worker idles (or idled since the
  // last look); under load nobody idles, the horizon runs out, and writers
  // pay no NOTIFY.
  bool wakeups_wanted() const {
    if (o_.wakeup != "notify") return false;
    for (size_t i = 0; i < s_.slots.size(); ++i)
      if (s_.slots[i]->idle || s_.slots[i]->idle_entries.load() != idle_entries_seen_[i]) return true;
    return false;
  }

  // Starts or refreshes the wake-up horizon when it is wanted.
  void manage_wakeups() {
    if (!wakeups_wanted()) {
      wakeups_until_.reset();
      return;
    }
    const auto now = Clock::now();
    if (wakeups_until_ && *wakeups_until_ - now > kWakeupHorizon - kWakeupRefresh) return;
    const bool starting = !wakeups_until_ || *wakeups_until_ <= now;
    store_->want_wakeups(std::chrono::duration_cast<std::chrono::seconds>(kWakeupHorizon));
    wakeups_until_ = now + kWakeupHorizon;
    // A row committed before the horizon took effect sent no notification:
    // the idle workers look once more.
    if (starting) wake_idle_workers();
  }

  void tick() {
    manage_wakeups();
    const bool wanted = wakeups_wanted();
    for (size_t i = 0; i < s_.slots.size(); ++i) idle_entries_seen_[i] = s_.slots[i]->idle_entries.load();
    std::vector<std::vector<Lane>> owned(s_.slots.size());
    std::vector<Lane> idle_lanes;
    bool all_idle = true;
    for (size_t i = 0; i < s_.slots.size(); ++i) {
      auto& slot = *s_.slots[i];
      {
        std::lock_guard lock(slot.mutex);
        owned[i] = slot.owned;
      }
      if (slot.idle) {
        idle_lanes.insert(idle_lanes.end(), owned[i].begin(), owned[i].end());
      } else {
        all_idle = false;
      }
    }
    // The fleet look refreshes the wake-up horizon in the same round trip.
    const outbox::FleetView view =
        store_->fleet(idle_lanes, wanted ? std::chrono::duration_cast<std::chrono::seconds>(kWakeupHorizon)
                                         : std::chrono::seconds(0));
    if (wanted) wakeups_until_ = Clock::now() + kWakeupHorizon;
    const auto changes = plan_lanes(view.workers, view.taken, owned, seed_);
    for (size_t i = 0; i < changes.size(); ++i) {
      if (changes[i].acquire.empty() && changes[i].release == 0) continue;
      {
        std::lock_guard lock(s_.slots[i]->mutex);
        s_.slots[i]->change = changes[i];
      }
      s_.slots[i]->signal.notify();
    }
    // The fallback poll: idle workers whose lanes have due rows.
    for (size_t i = 0; i < s_.slots.size(); ++i) {
      if (!s_.slots[i]->idle) continue;
      for (Lane lane : owned[i]) {
        if (std::find(view.due.begin(), view.due.end(), lane) != view.due.end()) {
          s_.slots[i]->signal.notify();
          break;
        }
      }
    }
    if (o_.drain && all_idle && view.due.empty() && store_->outbox_empty()) {
      spdlog::info("the outbox is empty: drain done");
      done_.request_stop();
    }
  }

  // Sleeps until the next tick, a notification, a worker's poke or stop.
  void wait_for_event(const std::stop_token& stop, Clock::time_point next_tick) {
    // Notifications that arrived while a statement ran were read off the
    // socket with its result: hand them out before waiting on the socket.
    conn_->get_notifs();
    while (!stop.stop_requested()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now());
      if (left.count() <= 0) return;
      pollfd fds[2] = {{s_.coordinator_event, POLLIN, 0}, {conn_->sock(), POLLIN, 0}};
      const int timeout = static_cast<int>(std::min<int64_t>(left.count(), 200));  // re-check stop
      const int ready = ::poll(fds, 2, timeout);
      if (ready <= 0) continue;
      if (fds[1].revents != 0) conn_->get_notifs();  // runs WakeupReceiver; throws when the session broke
      if (fds[0].revents & POLLIN) {
        uint64_t count = 0;
        (void)!::read(s_.coordinator_event, &count, sizeof count);
        return;  // a worker went idle: maybe register
      }
    }
  }

  Relay::State& s_;
  const RelayOptions& o_;
  std::stop_source& done_;
  const uint32_t seed_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<outbox::OutboxStore> store_;
  std::unique_ptr<WakeupReceiver> receiver_;
  // Until when the outbox trigger notifies on our behalf (none: not wanted).
  std::optional<Clock::time_point> wakeups_until_;
  std::vector<uint64_t> idle_entries_seen_;
};

}  // namespace

Relay::Relay(RelayOptions options, std::shared_ptr<brokers::Publisher> publisher)
    : state_(std::make_unique<State>()) {
  validate(options);
  // The broker URL is checked first: a bad URL is reported even when the
  // database is also unreachable. The client is made last, so nothing
  // connects to the broker unless the database is ready.
  if (!publisher) brokers::check_broker_url(options.broker_url);
  state_->conninfo = relay_conninfo(options.database_url, kApplicationName);
  // A statement cancelled or deadlocked here is retried like the workers'
  // (a few times: a database that keeps refusing is reported at start);
  // an unreachable database or a missing schema is reported at once.
  for (int attempt = 1;; ++attempt) {
    try {
      pqxx::connection conn(state_->conninfo.conninfo);
      outbox::require_schema(conn, options.schema);
      break;
    } catch (const pqxx::failure& e) {
      if (attempt >= 20 || classify(e) != DbFailure::retry) throw;
      spdlog::warn("checking the txbox schema failed, retrying: {}", describe(e));
      std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
    }
  }
  state_->publisher = publisher ? std::move(publisher)
                                : brokers::open_publisher(options.broker_url, options.broker_properties);
  state_->outage_backoff = std::make_unique<Backoff>(
      std::min<std::chrono::milliseconds>(1s, options.outage_backoff_cap), 2.0, options.outage_backoff_cap);
  state_->budget = std::make_unique<ByteBudget>(options.max_batch_bytes);
  for (int i = 0; i < options.workers; ++i) state_->slots.push_back(std::make_unique<WorkerSlot>());
  state_->coordinator_event = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (state_->coordinator_event < 0) throw std::runtime_error("eventfd() failed: cannot start the relay");
  state_->options = std::move(options);
  state_->metrics.workers.set(state_->options.workers);
  state_->metrics.registry.on_collect([state = state_.get()] {
    size_t lanes = 0;
    for (auto& slot : state->slots) {
      std::lock_guard lock(slot->mutex);
      lanes += slot->owned.size();
    }
    state->metrics.lanes_owned.set(static_cast<double>(lanes));
  });
}

Relay::~Relay() = default;

RelayStats Relay::run(std::stop_token stop) {
  std::mutex error_mutex;
  std::exception_ptr error;
  std::stop_source abort;  // a fatal error, or the end of a drain, stops everyone
  std::stop_callback forward(stop, [&] { abort.request_stop(); });
  for (auto& slot : state_->slots) slot->heartbeat.store(Clock::now().time_since_epoch().count());
  std::unique_ptr<metrics::HttpEndpoint> endpoint;
  if (!state_->options.http_listen.empty()) {
    const auto address = metrics::parse_listen_address(state_->options.http_listen, "--http-listen");
    endpoint = std::make_unique<metrics::HttpEndpoint>(
        address, metrics::EndpointHandlers{&state_->metrics.registry, [this] { return state_->health(); },
                                           [this] { return state_->ready(); }});
    spdlog::info("serving /metrics, /healthz and /readyz on http://{}:{}",
                 address.host.find(':') != std::string::npos ? "[" + address.host + "]" : address.host,
                 endpoint->port());
  }
  {
    std::vector<std::jthread> threads;
    auto guarded = [&](auto body) {
      return [&, body](std::stop_token) {
        try {
          body();
        } catch (...) {
          std::lock_guard lock(error_mutex);
          if (!error) error = std::current_exception();
          abort.request_stop();
        }
      };
    };
    threads.emplace_back(guarded([&] { Coordinator(*state_, abort).run(abort.get_token()); }));
    for (int i = 0; i < state_->options.workers; ++i)
      threads.emplace_back(guarded([&, i] { Worker(*state_, i).run(abort.get_token()); }));
  }
  if (error) std::rethrow_exception(error);
  return stats();
}

const metrics::Registry& Relay::metrics() const noexcept { return state_->metrics.registry; }

RelayStats Relay::stats() const {
  return {state_->published.load(), state_->failed.load(),    state_->dead_lettered.load(),
          state_->batches.load(),   state_->held_back.load(), state_->outages.load()};
}

}  // namespace txbox::relay
