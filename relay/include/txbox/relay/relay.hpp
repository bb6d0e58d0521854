#pragma once
// The relay: a pool of workers that move committed outbox rows to the broker.
//
// Claim protocol (docs/relay.md): rows are hashed into 256 lanes by key.
// Each worker owns a set of lanes through PostgreSQL session advisory locks
// for as long as its session lives (freed by the server when the process or
// its host dies), and lanes are rebalanced as relays come and go. A worker
// claims the due rows of all its lanes with one statement, publishes them,
// claims the next batch while the broker confirms (keys in flight are left
// out of it), and then completes each batch with one statement that deletes
// exactly the confirmed rows, reschedules failed ones and moves dead
// letters. An idle relay is woken by LISTEN/NOTIFY within a millisecond of a
// commit, with polling as the fallback.

#include <atomic>
#include <cstdint>
#include <memory>
#include <stop_token>

#include "txbox/brokers/broker.hpp"
#include "txbox/core/error.hpp"
#include "txbox/metrics/metrics.hpp"
#include "txbox/relay/options.hpp"

namespace txbox::relay {

struct RelayStats {
  uint64_t published = 0;      // confirmed and deleted
  uint64_t failed = 0;         // publish attempts that failed (retried or dead-lettered)
  uint64_t dead_lettered = 0;  // rows moved to txbox.dead_letters
  uint64_t batches = 0;        // batches completed
  uint64_t held_back = 0;      // rows left for later behind an earlier row of their key
  uint64_t outages = 0;        // batches found the broker unavailable (no attempt counted)
};

class Relay {
 public:
  struct State;

  // `publisher` is shared by all workers; pass nullptr to create one from
  // options.broker_url. Validates the options and checks the database schema
  // (throws txbox::UsageError / outbox::SchemaError / pqxx errors).
  explicit Relay(RelayOptions options, std::shared_ptr<brokers::Publisher> publisher = nullptr);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Runs the workers until `stop` is requested, or, with options.drain, until
  // the outbox is empty. Returns the totals. Throws if a worker hits an error
  // it cannot recover from (the schema disappeared, permission denied, a
  // connection pooler that does not keep sessions).
  RelayStats run(std::stop_token stop);

  RelayStats stats() const;

  // The relay's metrics (what --http-listen serves at /metrics), for a
  // program that embeds the relay and serves them itself.
  const metrics::Registry& metrics() const noexcept;

 private:
  std::unique_ptr<State> state_;
};

// Thrown when the relay's PostgreSQL session changes between statements
// (a transaction-pooling proxy such as PgBouncer in transaction mode): lane
// ownership needs session advisory locks. Not retryable.
class SessionPoolingError : public txbox::Error {
 public:
  explicit SessionPoolingError(const std::string& what) : txbox::Error(ErrorKind::permanent, what) {}
};

}  // namespace txbox::relay
