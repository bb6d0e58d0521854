#include "txbox/relay/relay.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>
#include <thread>
#include <unordered_set>

#include "backoff.hpp"
#include "txbox/outbox/schema.hpp"

namespace txbox::relay {
namespace {

// pg_try_advisory_lock(kLaneLockClass, lane): the first key of the
// two-key advisory lock space, so lane locks never collide with an
// application's own single-key advisory locks.
constexpr int kLaneLockClass = 0x7478;  // "tx"

// Lanes that have rows, found with a loose index scan over (lane, id): at most
// one index probe per lane, however many rows the outbox holds.
constexpr const char* kLanesSql = R"sql(
WITH RECURSIVE lanes AS (
  (SELECT lane FROM txbox.outbox ORDER BY lane LIMIT 1)
  UNION ALL
  SELECT (SELECT o.lane FROM txbox.outbox o WHERE o.lane > lanes.lane ORDER BY o.lane LIMIT 1)
  FROM lanes WHERE lanes.lane IS NOT NULL
)
SELECT lane FROM lanes WHERE lane IS NOT NULL)sql";

// The due rows of one lane in id order. A row whose key has an earlier row
// waiting for a retry is left alone, so a key's order survives failures.
constexpr const char* kClaimSql = R"sql(
SELECT o.id, o.message_id, o.destination, o.message_key, o.payload, o.headers::text, o.attempts
FROM txbox.outbox o
WHERE o.lane = $1
  AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
  AND NOT EXISTS (
    SELECT 1 FROM txbox.outbox b
    WHERE b.lane = $1 AND b.attempts > 0 AND b.message_key = o.message_key AND b.id < o.id
      AND b.next_attempt_at > now())
ORDER BY o.id
LIMIT $2
FOR UPDATE SKIP LOCKED)sql";

constexpr const char* kDeleteSql = "DELETE FROM txbox.outbox WHERE id = ANY($1::bigint[])";

constexpr const char* kDeadLetterSql = R"sql(
WITH moved AS (DELETE FROM txbox.outbox WHERE id = $1 RETURNING *)
INSERT INTO txbox.dead_letters (outbox_id, message_id, destination, message_key, payload, headers,
                                created_at, attempts, error_class, last_error)
SELECT id, message_id, destination, message_key, payload, headers, created_at, attempts + 1, $2, $3
FROM moved)sql";

constexpr const char* kFailSql = R"sql(
UPDATE txbox.outbox
SET attempts = attempts + 1,
    next_attempt_at = now() + $2 * interval '1 millisecond',
    last_error = $3
WHERE id = $1)sql";

std::string id_array(const std::vector<int64_t>& ids) {
  std::string out = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(ids[i]);
  }
  out += '}';
  return out;
}

// Parses the headers column; returns an error text for a row that is not a
// JSON object of string values.
std::optional<std::string> parse_headers(const std::string& text, brokers::Headers& out) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object())
    return fmt::format("headers must be a JSON object of string values, got {}", text);
  for (auto& [name, value] : json.items()) {
    if (!value.is_string())
      return fmt::format(
          "header '{}' is {} but headers must be JSON strings (write \"{}\": \"...\")", name,
          value.type_name(), name);
    out.emplace_back(name, value.get<std::string>());
  }
  return std::nullopt;
}

}  // namespace

struct Relay::State {
  RelayOptions options;
  std::shared_ptr<brokers::Publisher> publisher;
  std::atomic<uint64_t> published{0}, failed{0}, dead_lettered{0}, batches{0};
  // Broker outage, shared by the workers so it is logged once per change.
  std::mutex outage_mutex;
  bool broker_down = false;
  Backoff outage_backoff{std::chrono::seconds(1), 2.0, std::chrono::seconds(30)};

  // Returns how long to wait before probing the broker again.
  std::chrono::milliseconds report_outage(const std::string& error) {
    std::lock_guard lock(outage_mutex);
    if (!broker_down) {
      broker_down = true;
      spdlog::error("broker unavailable: {}; rows stay in the outbox, probing with backoff (attempts "
                    "are not counted while the broker is down)",
                    error);
    }
    return outage_backoff.next();
  }
  void report_available() {
    std::lock_guard lock(outage_mutex);
    if (broker_down) {
      broker_down = false;
      spdlog::info("broker available again: publishing resumed");
    }
    outage_backoff.reset();
  }
};

namespace {

class Worker {
 public:
  Worker(Relay::State& state, int index)
      : state_(state),
        options_(state.options),
        publisher_(*state.publisher),
        index_(index),
        random_(std::random_device{}() + static_cast<unsigned>(index)) {}

  void run(std::stop_token stop) {
    Backoff reconnect_backoff(std::chrono::milliseconds(200), 2.0, std::chrono::seconds(10));
    bool reported_down = false;
    while (!stop.stop_requested()) {
      try {
        if (!conn_) connect();
        if (reported_down) {
          spdlog::info("worker {}: reconnected to PostgreSQL", index_);
          reported_down = false;
        }
        reconnect_backoff.reset();
        bool moved = pass(stop);
        if (outage_wait_.count() > 0) {
          sleep(stop, outage_wait_);
          outage_wait_ = std::chrono::milliseconds(0);
        } else if (!moved) {
          if (options_.drain && outbox_empty()) return;
          sleep(stop, options_.poll_interval);
        }
      } catch (const pqxx::broken_connection& e) {
        conn_.reset();
        if (!reported_down)
          spdlog::warn("worker {}: lost the PostgreSQL connection ({}); reconnecting with backoff",
                       index_, first_line(e.what()));
        reported_down = true;
        sleep(stop, reconnect_backoff.next());
      } catch (const pqxx::sql_error& e) {
        // Server shutting down or restarting (57P01..57P03), or the
        // connection dropped mid-statement (08xxx): reconnect like above.
        // Anything else is a real error and stops the relay.
        const std::string& state = e.sqlstate();
        if (!(state.starts_with("57P") || state.starts_with("08"))) throw;
        conn_.reset();
        if (!reported_down)
          spdlog::warn("worker {}: PostgreSQL went away ({}); reconnecting with backoff", index_,
                       first_line(e.what()));
        reported_down = true;
        sleep(stop, reconnect_backoff.next());
      } catch (const pqxx::in_doubt_error& e) {
        // The commit may or may not have happened: either way the rows are
        // republished or already gone, never lost.
        conn_.reset();
        spdlog::warn("worker {}: commit outcome unknown ({}); rows will be published again",
                     index_, first_line(e.what()));
        sleep(stop, reconnect_backoff.next());
      }
    }
  }

 private:
  static std::string first_line(const char* text) {
    std::string s(text);
    if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
    return s;
  }

  void sleep(const std::stop_token& stop, std::chrono::milliseconds duration) {
    std::mutex mutex;
    std::condition_variable_any cv;
    std::unique_lock lock(mutex);
    cv.wait_for(lock, stop, duration, [] { return false; });
  }

  void connect() {
    auto conn = std::make_unique<pqxx::connection>(options_.database_url);
    conn->prepare("txbox_lanes", kLanesSql);
    conn->prepare("txbox_claim", kClaimSql);
    conn->prepare("txbox_delete", kDeleteSql);
    conn->prepare("txbox_fail", kFailSql);
    conn->prepare("txbox_dead_letter", kDeadLetterSql);
    conn_ = std::move(conn);
  }

  bool outbox_empty() {
    pqxx::nontransaction tx(*conn_);
    return !tx.exec1("SELECT EXISTS (SELECT 1 FROM txbox.outbox)")[0].as<bool>();
  }

  // One round over the lanes that have rows. Returns whether any row moved.
  bool pass(const std::stop_token& stop) {
    std::vector<int> lanes;
    {
      pqxx::nontransaction tx(*conn_);
      for (const auto& row : tx.exec_prepared("txbox_lanes")) lanes.push_back(row[0].as<int>());
    }
    if (lanes.empty()) return false;
    // Random start, then round robin: workers and processes spread over the
    // lanes without a coordinator.
    std::rotate(lanes.begin(), lanes.begin() + random_() % lanes.size(), lanes.end());
    bool moved = false;
    for (int lane : lanes) {
      if (stop.stop_requested()) break;
      if (!try_lock(lane)) continue;
      try {
        for (int i = 0; i < options_.batches_per_lane && !stop.stop_requested(); ++i) {
          size_t claimed = process_batch(lane);
          if (claimed > 0) moved = true;
          if (claimed < static_cast<size_t>(options_.batch_size) || outage_wait_.count() > 0) break;
        }
      } catch (...) {
        unlock_quietly(lane);
        throw;
      }
      unlock_quietly(lane);
      if (outage_wait_.count() > 0) break;  // the broker is down: stop the round
    }
    return moved;
  }

  bool try_lock(int lane) {
    pqxx::nontransaction tx(*conn_);
    return tx.exec_params1("SELECT pg_try_advisory_lock($1, $2)", kLaneLockClass, lane)[0].as<bool>();
  }

  void unlock_quietly(int lane) {
    if (!conn_ || !conn_->is_open()) return;  // a dead session holds no locks
    try {
      pqxx::nontransaction tx(*conn_);
      tx.exec_params("SELECT pg_advisory_unlock($1, $2)", kLaneLockClass, lane);
    } catch (const std::exception& e) {
      spdlog::debug("worker {}: unlock of lane {} failed: {}", index_, lane, e.what());
    }
  }

  size_t process_batch(int lane) {
    pqxx::work tx(*conn_, "txbox-relay-batch");
    auto rows = tx.exec_prepared("txbox_claim", lane, options_.batch_size);
    if (rows.empty()) {
      tx.commit();
      return 0;
    }
    const size_t n = rows.size();
    std::vector<int64_t> ids(n);
    std::vector<int> attempts(n);
    std::vector<std::optional<std::string>> keys(n);
    std::vector<std::optional<std::string>> bad_row(n);
    std::vector<brokers::Message> messages;
    std::vector<size_t> message_row;  // messages[i] came from rows[message_row[i]]
    messages.reserve(n);
    message_row.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& row = rows[static_cast<pqxx::result::size_type>(i)];
      ids[i] = row[0].as<int64_t>();
      attempts[i] = row[6].as<int>();
      if (!row[3].is_null()) keys[i] = row[3].as<std::string>();
      brokers::Message message;
      message.message_id = row[1].as<std::string>();
      message.destination = row[2].as<std::string>();
      message.key = keys[i];
      message.payload = pqxx::binarystring(row[4]).str();
      if (message.destination.empty()) {
        bad_row[i] = "destination is empty: set the destination column to a topic name";
        continue;
      }
      if (auto error = parse_headers(row[5].as<std::string>(), message.headers)) {
        bad_row[i] = std::move(error);
        continue;
      }
      messages.push_back(std::move(message));
      message_row.push_back(i);
    }

    std::vector<brokers::PublishResult> results(n);
    for (size_t i = 0; i < n; ++i)
      if (bad_row[i]) results[i] = {false, brokers::ErrorClass::permanent, *bad_row[i]};
    size_t confirmed = 0;
    if (!messages.empty()) {
      auto published = publisher_.publish(messages, options_.publish_timeout);
      for (size_t m = 0; m < published.size() && m < messages.size(); ++m) {
        confirmed += published[m].confirmed;
        results[message_row[m]] = std::move(published[m]);
      }
    }

    // The broker is down as a whole (not this batch's fault): leave every row
    // as it was, attempts uncounted, and wait before probing again.
    auto first_failure = std::find_if(results.begin(), results.end(),
                                      [](const auto& r) { return !r.confirmed; });
    if (first_failure != results.end() && confirmed == 0 && !publisher_.healthy()) {
      tx.abort();
      outage_wait_ = state_.report_outage(first_failure->error);
      return n;
    }
    if (confirmed > 0) state_.report_available();

    // Keep order per key: once a row of a key failed and will be retried, its
    // later rows in this batch stay in the outbox (even if the broker
    // confirmed them) and go again after it: the key's tail arrives in order.
    std::unordered_set<std::string> retrying_keys;
    std::vector<int64_t> done;
    std::vector<size_t> dead;
    done.reserve(n);
    uint64_t retries = 0;
    for (size_t i = 0; i < n; ++i) {
      if (keys[i] && retrying_keys.count(*keys[i])) continue;  // held back
      const auto& result = results[i];
      if (result.confirmed) {
        done.push_back(ids[i]);
      } else if (result.error_class == brokers::ErrorClass::permanent ||
                 attempts[i] + 1 >= options_.retry.max_attempts) {
        dead.push_back(i);
      } else {
        ++retries;
        if (keys[i]) retrying_keys.insert(*keys[i]);
        auto delay = retry_delay(options_.retry, attempts[i] + 1, random_);
        tx.exec_prepared("txbox_fail", ids[i], static_cast<long long>(delay.count()),
                         fmt::format("{} error: {}", brokers::to_string(result.error_class), result.error));
      }
    }
    if (!dead.empty()) dead_letter(tx, dead, rows, results, attempts);
    if (!done.empty()) tx.exec_prepared("txbox_delete", id_array(done));
    tx.commit();
    state_.published += done.size();
    state_.failed += retries + dead.size();
    state_.dead_lettered += dead.size();
    ++state_.batches;
    if (retries)
      spdlog::warn("worker {}: lane {}: {} of {} messages failed and will be retried (first: {})",
                   index_, lane, retries, n, first_failure->error);
    return n;
  }

  // Moves rows to txbox.dead_letters in the batch's transaction; optionally
  // publishes them to "<destination>.dlq" first (the table keeps them even
  // when that publish fails).
  void dead_letter(pqxx::work& tx, const std::vector<size_t>& dead, const pqxx::result& rows,
                   const std::vector<brokers::PublishResult>& results, const std::vector<int>& attempts) {
    if (options_.publish_dead_letters) {
      std::vector<brokers::Message> letters;
      auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
      for (size_t i : dead) {
        const auto& row = rows[static_cast<pqxx::result::size_type>(i)];
        brokers::Message letter;
        letter.message_id = row[1].as<std::string>();
        letter.destination = (row[2].as<std::string>().empty() ? "txbox" : row[2].as<std::string>()) + ".dlq";
        if (!row[3].is_null()) letter.key = row[3].as<std::string>();
        letter.payload = pqxx::binarystring(row[4]).str();
        parse_headers(row[5].as<std::string>(), letter.headers);  // best effort for bad rows
        letter.headers.emplace_back("dlq-error", results[i].error);
        letter.headers.emplace_back("dlq-attempts", std::to_string(attempts[i] + 1));
        letter.headers.emplace_back("dlq-original-destination", row[2].as<std::string>());
        letter.headers.emplace_back("dlq-timestamp", std::to_string(now));
        letters.push_back(std::move(letter));
      }
      auto published = publisher_.publish(letters, options_.publish_timeout);
      for (size_t k = 0; k < published.size(); ++k)
        if (!published[k].confirmed)
          spdlog::warn("worker {}: dead letter {} not published to {}: {} (it is kept in txbox.dead_letters)",
                       index_, letters[k].message_id, letters[k].destination, published[k].error);
    }
    for (size_t i : dead) {
      const auto& result = results[i];
      std::string reason = result.error_class == brokers::ErrorClass::permanent
                               ? result.error
                               : fmt::format("gave up after {} attempts: {}", attempts[i] + 1, result.error);
      tx.exec_prepared("txbox_dead_letter", ids_of(rows, i), brokers::to_string(result.error_class), reason);
      spdlog::error("worker {}: message {} to '{}' dead-lettered ({} error): {}", index_,
                    rows[static_cast<pqxx::result::size_type>(i)][1].c_str(),
                    rows[static_cast<pqxx::result::size_type>(i)][2].c_str(),
                    brokers::to_string(result.error_class), reason);
    }
  }

  static int64_t ids_of(const pqxx::result& rows, size_t i) {
    return rows[static_cast<pqxx::result::size_type>(i)][0].as<int64_t>();
  }

  Relay::State& state_;
  const RelayOptions& options_;
  brokers::Publisher& publisher_;
  int index_;
  // Set when a batch found the broker down: wait this long before claiming.
  std::chrono::milliseconds outage_wait_{0};
  std::mt19937 random_;
  std::unique_ptr<pqxx::connection> conn_;
};

}  // namespace

Relay::Relay(RelayOptions options, std::shared_ptr<brokers::Publisher> publisher)
    : state_(std::make_unique<State>()) {
  validate(options);
  // The broker URL is checked first: a bad URL is reported even when the
  // database is also unreachable. The client is made last, so nothing
  // connects to the broker unless the database is ready.
  if (!publisher) check_broker_url(options.broker_url);
  {
    pqxx::connection conn(options.database_url);
    outbox::require_schema(conn);
  }
  state_->publisher = publisher ? std::move(publisher) : make_publisher(options);
  state_->outage_backoff = Backoff(std::min<std::chrono::milliseconds>(std::chrono::seconds(1),
                                                                      options.outage_backoff_cap),
                                   2.0, options.outage_backoff_cap);
  state_->options = std::move(options);
}

Relay::~Relay() = default;

RelayStats Relay::run(std::stop_token stop) {
  std::mutex error_mutex;
  std::exception_ptr error;
  std::stop_source abort;  // a worker's fatal error stops the others
  std::stop_callback forward(stop, [&] { abort.request_stop(); });
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < state_->options.workers; ++i) {
      threads.emplace_back([&, i] {
        try {
          Worker worker(*state_, i);
          worker.run(abort.get_token());
        } catch (...) {
          std::lock_guard lock(error_mutex);
          if (!error) error = std::current_exception();
          abort.request_stop();
        }
      });
    }
  }
  if (error) std::rethrow_exception(error);
  return stats();
}

RelayStats Relay::stats() const {
  return {state_->published.load(), state_->failed.load(), state_->dead_lettered.load(),
          state_->batches.load()};
}

}  // namespace txbox::relay
