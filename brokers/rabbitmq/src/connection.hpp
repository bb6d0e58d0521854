#pragma once
// Private to the RabbitMQ adapter: the endpoint from a broker URL and one
// rabbitmq-c connection (socket + login + channel) owned by a unique_ptr.

#include <amqp.h>

#include <chrono>
#include <memory>
#include <optional>
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
  // How long a send may stall (the broker stopped reading: blocked by an
  // alarm, overloaded, or gone without closing the socket) before the kernel
  // drops the connection (TCP_USER_TIMEOUT); 0 = the kernel's default.
  std::chrono::milliseconds send_timeout{30000};
  std::string display;   // amqp://user@host:port/vhost, no password
};

// Validates the URL (scheme amqp, at least one host) and the options
// (query parameters, then `properties`, override). Throws txbox::UsageError.
Endpoint parse_endpoint(const brokers::BrokerUrl& url, const brokers::Properties& properties,
                        int default_heartbeat);

struct ConnectionDeleter {
  void operator()(amqp_connection_state_t_* state) const noexcept;
};
// The adapter's shorthands, for both the publisher and the consumer.
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
// Reconnecting after a lost connection waits this long at first, doubling
// up to the maximum.
inline constexpr milliseconds kBackoffMin{100};
inline constexpr milliseconds kBackoffMax{5000};

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

// Default timeout of an RPC (channel.open, exchange.declare, ...).
inline constexpr std::chrono::milliseconds kRpcTimeout{10000};

struct OpenOptions {
  // Publisher connections announce the `connection.blocked` capability
  // (rabbitmq-c 0.11 does not), so the broker tells them about alarms.
  bool publisher = false;
  // Overrides endpoint.connect_timeout (probe() connects within its timeout).
  // Bounds the TCP connect, the AMQP handshake and the channel setup.
  std::optional<std::chrono::milliseconds> connect_timeout;
  // confirm.select on the channel (publisher confirms).
  bool confirms = false;
};

class Connection {
 public:
  // Connects to the first reachable host, logs in, opens `channel` (in
  // confirm mode with options.confirms). RPCs afterwards time out after
  // kRpcTimeout. Throws AmqpError (cause unreachable when no host could be
  // connected to).
  static std::unique_ptr<Connection> open(const Endpoint& endpoint, amqp_channel_t channel,
                                          const OpenOptions& options = {});
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
  // Opens a new channel (next number, wrapping within channel_max) after the
  // broker closed the current one. Throws AmqpError.
  void reopen_channel();
  // The broker closed the channel: answers with channel.close-ok; the
  // channel is reopened by ensure_channel() when it is needed next.
  void channel_closed_by_broker() noexcept;
  // Reopens the channel if the broker closed it. Throws AmqpError.
  void ensure_channel();
  bool channel_usable() const noexcept { return !channel_closed_; }
  void set_rpc_timeout(std::chrono::milliseconds timeout) noexcept;
  std::size_t frame_max() const noexcept;
  // confirm.select on the channel (and on every reopened one). Throws AmqpError.
  void enable_confirms();

 private:
  Connection(ConnectionPtr state, amqp_channel_t channel) : state_(std::move(state)), channel_(channel) {}
  ConnectionPtr state_;
  amqp_channel_t channel_;
  bool broken_ = false;
  bool confirms_ = false;
  bool channel_closed_ = false;  // closed by the broker, close-ok sent, not reopened yet
};

timeval to_timeval(std::chrono::milliseconds ms) noexcept;

}  // namespace txbox::rabbitmq::detail
