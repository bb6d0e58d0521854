#include "connection.hpp"

#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include "txbox/core/error.hpp"

namespace txbox::rabbitmq::detail {

namespace {
constexpr int kDefaultPort = 5672;
constexpr std::chrono::milliseconds kCloseTimeout{1000};

int parse_int(const std::string& name, const std::string& value, int min, int max) {
  int out = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc{} || ptr != value.data() + value.size() || out < min || out > max) {
    throw txbox::UsageError(fmt::format(
        "RabbitMQ option {}={} is not a whole number between {} and {}: fix it in the broker URL "
        "query or the broker properties",
        name, value, min, max));
  }
  return out;
}

void apply_option(Endpoint& endpoint, const std::string& name, const std::string& value) {
  if (name == "connect_timeout_ms") {
    endpoint.connect_timeout = std::chrono::milliseconds(parse_int(name, value, 1, 3600000));
  } else if (name == "heartbeat") {
    endpoint.heartbeat = parse_int(name, value, 0, 3600);
  } else if (name == "send_timeout_ms") {
    endpoint.send_timeout = std::chrono::milliseconds(parse_int(name, value, 0, 3600000));
  } else {
    throw txbox::UsageError(fmt::format(
        "unknown RabbitMQ option '{}': supported are connect_timeout_ms, send_timeout_ms and heartbeat (seconds)",
        name));
  }
}
}  // namespace

Endpoint parse_endpoint(const brokers::BrokerUrl& url, const brokers::Properties& properties,
                        int default_heartbeat) {
  if (url.scheme != "amqp") {
    throw txbox::UsageError(fmt::format(
        "broker URL '{}' has scheme '{}': the RabbitMQ adapter needs amqp://user:pass@host:port/vhost",
        url.redacted, url.scheme));
  }
  if (url.hosts.empty() || url.hosts.front().host.empty()) {
    throw txbox::UsageError(fmt::format(
        "broker URL '{}' names no host: expected amqp://user:pass@host:port/vhost", url.redacted));
  }
  Endpoint endpoint;
  endpoint.heartbeat = default_heartbeat;
  for (auto hp : url.hosts) {
    if (hp.host.empty()) {
      throw txbox::UsageError(fmt::format("broker URL '{}' has an empty host in its host list",
                                              url.redacted));
    }
    if (hp.port == 0) hp.port = kDefaultPort;
    endpoint.hosts.push_back(hp);
  }
  if (!url.user.empty()) {
    endpoint.user = url.user;
    endpoint.password = url.password;
  }
  endpoint.vhost = url.path.empty() ? "/" : url.path;
  for (const auto& [name, value] : url.query) apply_option(endpoint, name, value);
  for (const auto& [name, value] : properties) apply_option(endpoint, name, value);
  endpoint.display = fmt::format("amqp://{}@{}/{}", endpoint.user, url.host_list(kDefaultPort),
                                 endpoint.vhost == "/" ? "" : endpoint.vhost);
  return endpoint;
}

void ConnectionDeleter::operator()(amqp_connection_state_t_* state) const noexcept {
  amqp_destroy_connection(state);
}

timeval to_timeval(std::chrono::milliseconds ms) noexcept {
  if (ms.count() < 0) ms = std::chrono::milliseconds(0);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

namespace {
amqp_table_entry_t bool_entry(const char* key, bool value) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  e.value.value.boolean = value ? 1 : 0;
  return e;
}

// The kernel drops a connection whose sent data stays unacknowledged, or
// whose peer advertises a zero window, for longer than `timeout`:
// rabbitmq-c sends without a deadline, so a broker that stops reading
// (connection.blocked) would otherwise hang a publish forever.
void set_send_timeout(amqp_socket_t* socket, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return;
  int fd = amqp_socket_get_sockfd(socket);
  unsigned int ms = static_cast<unsigned int>(timeout.count());
  if (fd < 0 || ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0) {
    spdlog::warn("RabbitMQ: cannot set TCP_USER_TIMEOUT on the connection; a broker that stops reading may "
                 "stall a publish until the kernel gives up");
  }
}
}  // namespace

std::unique_ptr<Connection> Connection::open(const Endpoint& endpoint, amqp_channel_t channel,
                                             const OpenOptions& options) {
  const auto connect_timeout = options.connect_timeout.value_or(endpoint.connect_timeout);
  // Client properties: rabbitmq-c merges them into its own (which announce
  // only authentication_failure_close and exchange_exchange_bindings).
  amqp_table_entry_t capabilities[] = {bool_entry("connection.blocked", true)};
  amqp_table_entry_t properties[2] = {
      utf8_entry(amqp_cstring_bytes("connection_name"),
                 amqp_cstring_bytes(options.publisher ? "txbox publisher" : "txbox consumer")), {}};
  properties[1].key = amqp_cstring_bytes("capabilities");
  properties[1].value.kind = AMQP_FIELD_KIND_TABLE;
  properties[1].value.value.table = {1, capabilities};
  const amqp_table_t client_properties{options.publisher ? 2 : 1, properties};

  Failure last{Cause::unreachable, AMQP_STATUS_SOCKET_ERROR, "no host to connect to"};
  for (const auto& hp : endpoint.hosts) {
    ConnectionPtr state(amqp_new_connection());
    if (!state) throw AmqpError({Cause::library, AMQP_STATUS_NO_MEMORY, "amqp_new_connection failed"});
    amqp_socket_t* socket = amqp_tcp_socket_new(state.get());  // owned by the connection
    if (socket == nullptr) {
      throw AmqpError({Cause::library, AMQP_STATUS_NO_MEMORY, "amqp_tcp_socket_new failed"});
    }
    timeval connect_tv = to_timeval(connect_timeout);
    int status = amqp_socket_open_noblock(socket, hp.host.c_str(), hp.port, &connect_tv);
    if (status != AMQP_STATUS_OK) {
      last = {Cause::unreachable, status,
              fmt::format("cannot connect to RabbitMQ at {}:{}: {}; check that the broker runs "
                          "and the URL is right",
                          hp.host, hp.port, amqp_error_string2(status))};
      continue;
    }
    set_send_timeout(socket, endpoint.send_timeout);
    timeval handshake_tv = to_timeval(connect_timeout);
    amqp_set_handshake_timeout(state.get(), &handshake_tv);
    timeval setup_tv = to_timeval(std::min(connect_timeout, kRpcTimeout));  // channel.open, confirm.select
    amqp_set_rpc_timeout(state.get(), &setup_tv);
    amqp_rpc_reply_t reply = amqp_login_with_properties(
        state.get(), endpoint.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, endpoint.heartbeat, &client_properties,
        AMQP_SASL_METHOD_PLAIN, endpoint.user.c_str(), endpoint.password.c_str());
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
      last = failure_of(reply, fmt::format("login to RabbitMQ at {}:{} as '{}' (vhost '{}')", hp.host,
                                           hp.port, endpoint.user, endpoint.vhost));
      if (last.cause == Cause::connection_closed || last.code == AMQP_STATUS_CONNECTION_CLOSED ||
          last.code == AMQP_STATUS_SOCKET_CLOSED) {
        last.text += ": check the user, password and that the vhost exists with permissions for the user";
      }
      if (last.cause == Cause::library) last.cause = Cause::unreachable;
      continue;
    }
    std::unique_ptr<Connection> conn(new Connection(std::move(state), channel));
    amqp_channel_open(conn->get(), channel);
    conn->check_rpc("opening an AMQP channel");
    if (options.confirms) conn->enable_confirms();
    conn->set_rpc_timeout(kRpcTimeout);
    return conn;
  }
  throw AmqpError(last);
}

Connection::~Connection() {
  if (!state_ || broken_) return;
  timeval tv = to_timeval(kCloseTimeout);
  amqp_set_rpc_timeout(state_.get(), &tv);
  if (!channel_closed_) {
    amqp_rpc_reply_t r = amqp_channel_close(state_.get(), channel_, AMQP_REPLY_SUCCESS);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) return;
  }
  (void)amqp_connection_close(state_.get(), AMQP_REPLY_SUCCESS);
}

void Connection::check_rpc(std::string_view what) {
  amqp_rpc_reply_t reply = amqp_get_rpc_reply(state_.get());
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
  Failure failure = failure_of(reply, what);
  if (failure.cause == Cause::channel_closed) {
    send_channel_close_ok(channel_);
    try {
      reopen_channel();
    } catch (...) {
      broken_ = true;
    }
  } else {
    if (failure.cause == Cause::connection_closed) send_connection_close_ok();
    broken_ = true;
  }
  throw AmqpError(failure);
}

void Connection::send_channel_close_ok(amqp_channel_t channel) noexcept {
  amqp_channel_close_ok_t ok{};
  if (amqp_send_method(state_.get(), channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
    broken_ = true;
  }
}

void Connection::send_connection_close_ok() noexcept {
  amqp_connection_close_ok_t ok{};
  (void)amqp_send_method(state_.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  broken_ = true;
}

void Connection::reopen_channel() {
  // A fresh number: the broker may not have forgotten the closed channel
  // yet. Numbers wrap within the negotiated channel_max (RabbitMQ: 2047).
  int max = amqp_get_channel_max(state_.get());
  if (max <= 0 || max > 65535) max = 65535;
  amqp_channel_t next = static_cast<amqp_channel_t>(channel_ >= max ? 1 : channel_ + 1);
  amqp_channel_open(state_.get(), next);
  amqp_rpc_reply_t reply = amqp_get_rpc_reply(state_.get());
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
    broken_ = true;
    throw AmqpError(failure_of(reply, "reopening an AMQP channel"));
  }
  channel_ = next;
  channel_closed_ = false;
  if (confirms_) {
    amqp_confirm_select(state_.get(), channel_);
    reply = amqp_get_rpc_reply(state_.get());
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
      broken_ = true;
      throw AmqpError(failure_of(reply, "enabling publisher confirms on a reopened channel"));
    }
  }
}

void Connection::channel_closed_by_broker() noexcept {
  send_channel_close_ok(channel_);
  channel_closed_ = true;
}

void Connection::ensure_channel() {
  if (channel_closed_) reopen_channel();
}

void Connection::set_rpc_timeout(std::chrono::milliseconds timeout) noexcept {
  timeval tv = to_timeval(std::max(timeout, std::chrono::milliseconds(1)));
  amqp_set_rpc_timeout(state_.get(), &tv);
}

std::size_t Connection::frame_max() const noexcept {
  int max = amqp_get_frame_max(state_.get());
  return max > 0 ? static_cast<std::size_t>(max) : static_cast<std::size_t>(AMQP_DEFAULT_FRAME_SIZE);
}

void Connection::enable_confirms() {
  amqp_confirm_select(state_.get(), channel_);
  check_rpc("enabling publisher confirms (confirm.select)");
  confirms_ = true;
}

}  // namespace txbox::rabbitmq::detail
