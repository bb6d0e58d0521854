#pragma once
// Private to the RabbitMQ adapter: the endpoint from a broker URL and one
// rabbitmq-c connection (socket + login + channel) owned by a unique_ptr.

#include <amqp.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "errors.hpp"
#include "txbox/brokers/broker.hpp"
#include "txbox/brokers/url.hpp"

namespace txbox::rabbitmq::detail {

struct Endpoint {
  std::vector<brokers::HostPort> hosts;  // ports filled in
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  std::chrono::milliseconds connect_timeout{5000};
  int heartbeat = 0;     // seconds, 0 = off
  std::string display;   // amqp://user@host:port/vhost, no password
};

// Validates the URL (scheme amqp, at least one host) and the options
// (query parameters, then `properties`, override). Throws std::invalid_argument.
Endpoint parse_endpoint(const brokers::BrokerUrl& url, const brokers::Properties& properties,
                        int default_heartbeat);

struct ConnectionDeleter {
  void operator()(amqp_connection_state_t_* state) const noexcept;
};
using ConnectionPtr = std::unique_ptr<amqp_connection_state_t_, ConnectionDeleter>;

// Thrown by Connection::open and by RPC helpers.
class AmqpError : public std::runtime_error {
 public:
  explicit AmqpError(Failure failure)
      : std::runtime_error(describe(failure)), failure_(std::move(failure)) {}
  const Failure& failure() const noexcept { return failure_; }

 private:
  Failure failure_;
};

class Connection {
 public:
  // Connects to the first reachable host, logs in, opens `channel`.
  // Throws AmqpError.
  static std::unique_ptr<Connection> open(const Endpoint& endpoint, amqp_channel_t channel);
  ~Connection();  // closes politely unless broken (short timeout), then frees
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  amqp_connection_state_t get() const noexcept { return state_.get(); }
  amqp_channel_t channel() const noexcept { return channel_; }
  // Marks the socket unusable: the destructor then skips the close handshake.
  void mark_broken() noexcept { broken_ = true; }
  bool broken() const noexcept { return broken_; }

  // Throws AmqpError (and marks the connection broken unless only the
  // channel was closed) when the last RPC failed.
  void check_rpc(std::string_view what);
  // Answers a channel.close / connection.close from the broker.
  void send_channel_close_ok(amqp_channel_t channel) noexcept;
  void send_connection_close_ok() noexcept;
  // Opens a new channel (next number) after the broker closed the current
  // one. Throws AmqpError.
  void reopen_channel();
  // confirm.select on the channel (and on every reopened one). Throws AmqpError.
  void enable_confirms();

 private:
  Connection(ConnectionPtr state, amqp_channel_t channel) : state_(std::move(state)), channel_(channel) {}
  ConnectionPtr state_;
  amqp_channel_t channel_;
  bool broken_ = false;
  bool confirms_ = false;
};

timeval to_timeval(std::chrono::milliseconds ms) noexcept;

}  // namespace txbox::rabbitmq::detail
