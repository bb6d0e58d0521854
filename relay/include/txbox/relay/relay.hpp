#pragma once
// The relay: a pool of workers that move committed outbox rows to the broker.
//
// Claim protocol (see docs/relay.md): rows are split into lanes by a hash of
// their key. A worker owns a lane through a PostgreSQL session advisory lock
// (freed by the server when the process dies), claims the lane's due rows in
// id order with FOR UPDATE SKIP LOCKED, publishes the batch, waits for every
// confirmation, and deletes exactly the confirmed rows in the same
// transaction. Failed rows get attempts+1 and a backoff; later rows of their
// key wait for them.

#include <atomic>
#include <cstdint>
#include <memory>
#include <stop_token>

#include "txbox/brokers/broker.hpp"
#include "txbox/relay/options.hpp"

namespace txbox::relay {

struct RelayStats {
  uint64_t published = 0;  // confirmed and deleted
  uint64_t failed = 0;     // publish attempts that failed (retried or dead-lettered)
  uint64_t dead_lettered = 0;  // rows moved to txbox.dead_letters
  uint64_t batches = 0;
};

class Relay {
 public:
  struct State;

  // `publisher` is shared by all workers; pass nullptr to create one from
  // options.broker_url. Validates the options and checks the database schema
  // (throws std::invalid_argument / outbox::SchemaError / pqxx errors).
  explicit Relay(RelayOptions options, std::shared_ptr<brokers::Publisher> publisher = nullptr);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Runs the workers until `stop` is requested, or, with options.drain, until
  // the outbox is empty. Returns the totals. Throws if a worker hits an error
  // it cannot recover from (for example the schema disappeared).
  RelayStats run(std::stop_token stop);

  RelayStats stats() const;

 private:
  std::unique_ptr<State> state_;
};

// Creates the publisher for a broker URL scheme (kafka://...). Throws
// std::invalid_argument for an unknown scheme or malformed URL, naming the
// supported ones.
std::shared_ptr<brokers::Publisher> make_publisher(const RelayOptions& options);

// Parses the broker URL and checks its scheme is supported, without creating
// a client. Throws like make_publisher.
void check_broker_url(const std::string& broker_url);

}  // namespace txbox::relay
