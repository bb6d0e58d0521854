#pragma once
// txbox::outbox::OutboxStore — every statement the relay runs on the outbox
// and dead-letter tables, on one PostgreSQL session.
//
// The relay's claim protocol (docs/relay.md): rows are hashed into 256 lanes
// by key; a relay worker owns a set of lanes through session advisory locks
// for as long as its session lives, claims the due rows of its lanes with a
// plain snapshot read (no row locks: the lane is exclusive), publishes them,
// and then completes the batch in one statement that deletes exactly the
// row versions the broker confirmed, reschedules the failed ones and moves
// dead letters. A row changed by someone else in between (a new version)
// is left alone and claimed again.
//
// Unlike the writer API (Outbox::enqueue), an OutboxStore runs its own
// statements in autocommit mode on the connection it is given: each call is
// one round trip and one implicit transaction.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "txbox/core/pg_array.hpp"
#include "txbox/core/schema_name.hpp"

namespace pqxx {
class connection_base;
}

namespace txbox::outbox {

// Rows are hashed into this many lanes (the `lane` column, 0..255).
inline constexpr int kLaneCount = 256;

using Lane = int16_t;
using TimePoint = std::chrono::system_clock::time_point;

// One row version: completion touches a row only if it is still the version
// that was claimed (published).
struct RowVersion {
  int64_t id = 0;
  Lane lane = 0;         // with id, what the (lane, id) index finds it by
  uint32_t version = 0;  // the row's xmin when it was claimed
};

struct ClaimedRow {
  RowVersion row;
  std::string message_id;
  std::string destination;
  std::optional<std::string> key;
  // nullopt: the row alone is larger than the claim's byte limit and its
  // payload was not read; fetch it with fetch_payload() once there is room.
  std::optional<std::string> payload;
  int64_t payload_bytes = 0;
  std::string headers_json;
  int attempts = 0;  // failed publish attempts so far
  TimePoint created_at;
  std::optional<TimePoint> first_failed_at;
};

struct ClaimRequest {
  // Lanes to claim from, in the order to visit them (rotate it between
  // claims so every lane gets its turn).
  std::span<const Lane> lanes = {};
  int max_rows = 500;
  // Payload bytes the claim may return. Rows are taken in lane order, id
  // order within a lane, while the running total stays within the limit;
  // a first row larger than the limit comes alone, without its payload.
  int64_t max_bytes = int64_t{16} << 20;
  // Rows already in flight, and keys with a row in flight: a key's later
  // rows wait until its earlier ones are settled.
  std::span<const int64_t> exclude_ids = {};
  std::span<const std::string> exclude_keys = {};
};

struct Claim {
  // Due rows in lane order, id order within a lane. A row whose key has an
  // earlier row waiting for its retry time is not due.
  std::vector<ClaimedRow> rows;
  // The claim stopped at max_rows or max_bytes: more rows may be due now.
  bool full = false;
  // Only when no row was due: how long until the earliest waiting row of
  // these lanes becomes due, by the server's clock (nullopt: none waits).
  std::optional<std::chrono::milliseconds> next_due_in;
  int backend_pid = 0;  // of the session that ran the claim
};

struct RetryRow {
  RowVersion row;
  std::chrono::milliseconds delay{0};
  std::string error;
};

struct DeadLetterRow {
  RowVersion row;
  std::string error_class;  // permanent | transient | outage
  std::string reason;
};

struct Completion {
  std::vector<RowVersion> published;  // confirmed by the broker: delete
  std::vector<RetryRow> retries;      // attempts + 1, next attempt after `delay`
  std::vector<DeadLetterRow> dead_letters;
  bool empty() const { return published.empty() && retries.empty() && dead_letters.empty(); }
};

struct CompletionCounts {
  size_t deleted = 0;
  size_t retried = 0;
  size_t dead_lettered = 0;
  // Claimed versions left as they were because another session holds a
  // lock on them (an operator's open transaction): complete them later.
  std::vector<int64_t> locked;
};

// What the relay fleet looks like from one session (pg_locks), for lane
// balancing, plus which of the asked lanes have due rows (fallback poll).
struct FleetView {
  int workers = 0;          // relay worker sessions in this database
  std::vector<Lane> taken;  // lanes some worker owns
  std::vector<Lane> due;    // of the lanes asked about: those with a due row
};

class OutboxStore {
 public:
  // Prepares the statements on `conn`, which must outlive the store, for
  // the outbox of `schema`. One schema per connection.
  explicit OutboxStore(pqxx::connection_base& conn, const SchemaName& schema = SchemaName());

  pqxx::connection_base& connection() const { return conn_; }

  // --- claiming and completing (worker sessions)
  Claim claim(const ClaimRequest& request);
  // The payload of a claimed row that came without it, read in chunks.
  // nullopt when that row version is gone (deleted or changed meanwhile).
  std::optional<std::string> fetch_payload(RowVersion row, int64_t bytes);
  // One statement: deletes the published row versions, reschedules the
  // retries, moves the dead letters to txbox.dead_letters. Never waits for
  // a row lock: versions locked by another session are left and reported
  // (CompletionCounts::locked); versions that no longer exist (changed or
  // deleted by someone else) are left alone and not reported.
  CompletionCounts complete(const Completion& completion);

  // --- lane ownership (worker sessions)
  // Marks this session as a relay worker (a shared advisory lock that the
  // fleet view counts); returns the backend pid.
  int join_fleet();
  // Tries to lock `acquire` and unlocks `release`; returns the lanes locked.
  // Never pass a lane this session already holds.
  std::vector<Lane> change_lanes(std::span<const Lane> acquire, std::span<const Lane> release);

  // --- fleet, wake-ups, drain (the coordinator session)
  // With a `wakeups_for` above zero, also wants wake-ups for that long (as
  // want_wakeups, in the same round trip).
  FleetView fleet(std::span<const Lane> due_check, std::chrono::seconds wakeups_for = std::chrono::seconds(0));
  // Makes the outbox trigger notify wakeup_channel() for at least `duration`
  // from now (it notifies while <schema>.relay_wakeup_until is ahead of a
  // writer's transaction start; nobody ever moves it back). LISTEN on the
  // channel on the same session to receive them.
  void want_wakeups(std::chrono::seconds duration);
  bool outbox_empty();

  // The channel the outbox trigger notifies (sql/0003_relay_wakeups.sql):
  // "<schema>_outbox".
  const std::string& wakeup_channel() const { return channel_; }
  // First keys of the two-key advisory locks: lane ownership and fleet
  // presence. Distinct from an application's single-key advisory locks,
  // and per schema, so the relays of two schemas in one database neither
  // count each other as fleet nor take each other's lanes.
  int lane_lock_class() const { return lock_class_; }
  int presence_lock_class() const { return lock_class_ + 1; }

 private:
  pqxx::connection_base& conn_;
  std::string channel_;
  int lock_class_;
};

// PostgreSQL array literals for statement parameters (txbox/core/pg_array.hpp).
using txbox::pg_array;

}  // namespace txbox::outbox
