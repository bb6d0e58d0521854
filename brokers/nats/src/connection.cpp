// The shared cnats connection: URL -> options, infinite reconnects, one log
// line per connection state change.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <vector>

#include "handles.hpp"
#include "txbox/core/error.hpp"

namespace txbox::nats::detail {

namespace {

constexpr std::chrono::seconds kCloseWait{5};

std::vector<std::string> server_urls(const brokers::BrokerUrl& url) {
  std::vector<std::string> out;
  for (const auto& hp : url.hosts) {
    if (hp.host.empty()) {
      throw txbox::UsageError(fmt::format(
          "broker URL '{}' has an empty host: expected nats://[user:pass@]host:port[,host:port]",
          display_servers(url)));
    }
    out.push_back(fmt::format("nats://{}:{}", hp.host, hp.port == 0 ? kDefaultPort : hp.port));
  }
  if (out.empty()) {
    throw txbox::UsageError(fmt::format(
        "broker URL '{}' names no server: expected nats://[user:pass@]host:port[,host:port]",
        display_servers(url)));
  }
  return out;
}

void check(natsStatus s, const char* what) {
  if (s != NATS_OK) {
    throw brokers::BrokerError(
        ErrorKind::config,
        fmt::format("cannot configure the NATS connection: {} failed: {}", what, status_name(s)));
  }
}

}  // namespace

std::string status_name(natsStatus s) {
  return fmt::format("{} ({})", static_cast<int>(s), natsStatus_GetText(s));
}

std::string sanitize_name(const std::string& subject) {
  std::string out = subject;
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

std::string display_servers(const brokers::BrokerUrl& url) {
  std::string out;
  for (const auto& hp : url.hosts) {
    if (!out.empty()) out += ',';
    out += fmt::format("nats://{}{}:{}", url.user.empty() ? "" : url.user + ":***@", hp.host,
                       hp.port == 0 ? kDefaultPort : hp.port);
  }
  return out;
}

Connection::Connection(const brokers::BrokerUrl& url, ConnectionOptions options)
    : options_(std::move(options)) {
  if (url.scheme != "nats") {
    throw txbox::UsageError(fmt::format(
        "broker URL '{}' has scheme '{}': the NATS adapter needs nats://host:port[,host:port]",
        display_servers(url), url.scheme));
  }
  if (!url.path.empty()) {
    throw txbox::UsageError(fmt::format(
        "broker URL '{}' has a path '/{}': NATS URLs have none; remove it (options go in the "
        "query, e.g. ?create_streams=true)",
        display_servers(url), url.path));
  }
  const auto urls = server_urls(url);
  servers_ = display_servers(url);

  natsOptions* raw = nullptr;
  check(natsOptions_Create(&raw), "natsOptions_Create");
  OptionsPtr opts(raw);
  std::vector<const char*> ptrs;
  for (const auto& u : urls) ptrs.push_back(u.c_str());
  check(natsOptions_SetServers(opts.get(), ptrs.data(), static_cast<int>(ptrs.size())),
        "natsOptions_SetServers");
  if (!url.user.empty()) {
    check(natsOptions_SetUserInfo(opts.get(), url.user.c_str(), url.password.c_str()),
          "natsOptions_SetUserInfo");
  }
  const std::string name = options_.name.empty() ? "txbox-" + options_.role : options_.name;
  check(natsOptions_SetName(opts.get(), name.c_str()), "natsOptions_SetName");
  check(natsOptions_SetNoRandomize(opts.get(), true), "natsOptions_SetNoRandomize");
  check(natsOptions_SetTimeout(opts.get(), options_.connect_timeout.count()),
        "natsOptions_SetTimeout");
  check(natsOptions_SetAllowReconnect(opts.get(), true), "natsOptions_SetAllowReconnect");
  check(natsOptions_SetMaxReconnect(opts.get(), -1), "natsOptions_SetMaxReconnect");
  check(natsOptions_SetReconnectWait(opts.get(), options_.reconnect_wait.count()),
        "natsOptions_SetReconnectWait");
  check(natsOptions_SetPingInterval(opts.get(), options_.ping_interval.count()),
        "natsOptions_SetPingInterval");
  check(natsOptions_SetMaxPingsOut(opts.get(), options_.max_pings_out),
        "natsOptions_SetMaxPingsOut");
  if (!options_.buffer_while_reconnecting) {
    // 0 is taken literally by cnats 3.4.1 (the header comment says "0 =
    // default 8 MB"; src/opts.c stores 0 and src/pub.c refuses a publish
    // while reconnecting once the buffer holds >= 0 bytes, i.e. always, with
    // NATS_INSUFFICIENT_BUFFER). A fault test pins this down.
    check(natsOptions_SetReconnectBufSize(opts.get(), 0), "natsOptions_SetReconnectBufSize");
  }
  check(natsOptions_SetFailRequestsOnDisconnect(opts.get(), true),
        "natsOptions_SetFailRequestsOnDisconnect");
  check(natsOptions_SetDisconnectedCB(opts.get(), &Connection::on_disconnected, this),
        "natsOptions_SetDisconnectedCB");
  check(natsOptions_SetReconnectedCB(opts.get(), &Connection::on_reconnected, this),
        "natsOptions_SetReconnectedCB");
  check(natsOptions_SetClosedCB(opts.get(), &Connection::on_closed, this),
        "natsOptions_SetClosedCB");
  check(natsOptions_SetErrorHandler(opts.get(), &Connection::on_error, this),
        "natsOptions_SetErrorHandler");
  if (options_.retry_initial) {
    check(natsOptions_SetRetryOnFailedConnect(opts.get(), true, &Connection::on_connected, this),
          "natsOptions_SetRetryOnFailedConnect");
  }

  const natsStatus s = natsConnection_Connect(&nc_, opts.get());
  if (s == NATS_OK) {
    connected_.store(true);
    spdlog::info("NATS {}: connected to {}", options_.role, servers_);
  } else if (s == NATS_NOT_YET_CONNECTED && options_.retry_initial) {
    spdlog::warn(
        "NATS {}: no server reachable at {} yet; retrying every {} ms in the background "
        "(publishing fails with class outage until then)",
        options_.role, servers_, options_.reconnect_wait.count());
  } else {
    if (nc_ != nullptr) {
      natsConnection_Destroy(nc_);
      nc_ = nullptr;
    }
    const bool retryable = s != NATS_CONNECTION_AUTH_FAILED && s != NATS_NOT_PERMITTED;
    throw brokers::BrokerError(
        retryable ? ErrorKind::unavailable : ErrorKind::config,
        fmt::format("cannot connect the NATS {} to {}: {}{}", options_.role, servers_,
                    status_name(s),
                    retryable ? "; check that nats-server runs there (with -js) and try again"
                              : "; check the user and password in the broker URL"));
  }
}

Connection::~Connection() {
  if (nc_ == nullptr) return;
  closing_.store(true);
  natsConnection_Close(nc_);
  {
    std::unique_lock lock(closed_mutex_);
    closed_cv_.wait_for(lock, kCloseWait, [this] { return closed_; });
  }
  natsConnection_Destroy(nc_);
}

bool Connection::connected() const noexcept {
  return nc_ != nullptr && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
}

uint64_t Connection::reconnects() const noexcept {
  if (nc_ == nullptr) return 0;
  natsStatistics* stats = nullptr;
  if (natsStatistics_Create(&stats) != NATS_OK) return 0;
  uint64_t reconnects = 0;
  if (natsConnection_GetStats(nc_, stats) == NATS_OK) {
    (void)natsStatistics_GetCounts(stats, nullptr, nullptr, nullptr, nullptr, &reconnects);
  }
  natsStatistics_Destroy(stats);
  return reconnects;
}

std::string Connection::status_text() const {
  switch (natsConnection_Status(nc_)) {
    case NATS_CONN_STATUS_DISCONNECTED: return "disconnected";
    case NATS_CONN_STATUS_CONNECTING: return "connecting";
    case NATS_CONN_STATUS_CONNECTED: return "connected";
    case NATS_CONN_STATUS_CLOSED: return "closed";
    case NATS_CONN_STATUS_RECONNECTING: return "reconnecting";
    case NATS_CONN_STATUS_DRAINING_SUBS:
    case NATS_CONN_STATUS_DRAINING_PUBS: return "draining";
  }
  return "unknown";
}

JsPtr Connection::jetstream(const jsOptions* options) const {
  jsCtx* js = nullptr;
  const natsStatus s = natsConnection_JetStream(&js, nc_, const_cast<jsOptions*>(options));
  if (s != NATS_OK) {
    throw brokers::BrokerError(
        ErrorKind::unavailable,
        fmt::format("cannot create a JetStream context on the NATS connection to {}: {}", servers_,
                    status_name(s)));
  }
  return JsPtr(js);
}

void Connection::set_connected(bool connected, const char* what) noexcept {
  try {
    if (connected_.exchange(connected) == connected || closing_.load()) return;
    if (connected) {
      char url[256] = {};
      if (natsConnection_GetConnectedUrl(nc_, url, sizeof url) != NATS_OK) url[0] = '\0';
      spdlog::info("NATS {}: {} to {}", options_.role, what, url[0] ? url : servers_.c_str());
    } else {
      spdlog::warn("NATS {}: {} from {}; reconnecting every {} ms until a server answers",
                   options_.role, what, servers_, options_.reconnect_wait.count());
    }
  } catch (...) {
  }
}

void Connection::on_connected(natsConnection*, void* closure) noexcept {
  static_cast<Connection*>(closure)->set_connected(true, "connected");
}

void Connection::on_disconnected(natsConnection*, void* closure) noexcept {
  static_cast<Connection*>(closure)->set_connected(false, "disconnected");
}

void Connection::on_reconnected(natsConnection*, void* closure) noexcept {
  static_cast<Connection*>(closure)->set_connected(true, "reconnected");
}

void Connection::on_closed(natsConnection*, void* closure) noexcept {
  auto* self = static_cast<Connection*>(closure);
  self->connected_.store(false);
  try {
    std::lock_guard lock(self->closed_mutex_);
    self->closed_ = true;
  } catch (...) {
  }
  self->closed_cv_.notify_all();
}

void Connection::on_error(natsConnection*, natsSubscription*, natsStatus err,
                          void* closure) noexcept {
  auto* self = static_cast<Connection*>(closure);
  try {
    spdlog::warn("NATS {}: asynchronous error {}", self->options_.role, status_name(err));
  } catch (...) {
  }
}

}  // namespace txbox::nats::detail
