#pragma once
// Private to the NATS adapter: RAII owners for cnats handles and the shared
// connection (URL options, reconnect policy, state-change logging).

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "txbox/brokers/broker.hpp"
#include "txbox/brokers/url.hpp"

namespace txbox::nats::detail {

struct OptionsDeleter {
  void operator()(natsOptions* o) const noexcept { natsOptions_Destroy(o); }
};
struct JsDeleter {
  void operator()(jsCtx* js) const noexcept { jsCtx_Destroy(js); }
};
struct MsgDeleter {
  void operator()(natsMsg* m) const noexcept { natsMsg_Destroy(m); }
};
struct SubDeleter {
  void operator()(natsSubscription* s) const noexcept { natsSubscription_Destroy(s); }
};
struct MetaDeleter {
  void operator()(jsMsgMetaData* m) const noexcept { jsMsgMetaData_Destroy(m); }
};
struct StreamInfoDeleter {
  void operator()(jsStreamInfo* s) const noexcept { jsStreamInfo_Destroy(s); }
};
struct AccountInfoDeleter {
  void operator()(jsAccountInfo* a) const noexcept { jsAccountInfo_Destroy(a); }
};
struct ConsumerInfoDeleter {
  void operator()(jsConsumerInfo* c) const noexcept { jsConsumerInfo_Destroy(c); }
};
struct PubAckDeleter {
  void operator()(jsPubAck* p) const noexcept { jsPubAck_Destroy(p); }
};

using OptionsPtr = std::unique_ptr<natsOptions, OptionsDeleter>;
using JsPtr = std::unique_ptr<jsCtx, JsDeleter>;
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;
using SubPtr = std::unique_ptr<natsSubscription, SubDeleter>;
using MetaPtr = std::unique_ptr<jsMsgMetaData, MetaDeleter>;
using StreamInfoPtr = std::unique_ptr<jsStreamInfo, StreamInfoDeleter>;
using AccountInfoPtr = std::unique_ptr<jsAccountInfo, AccountInfoDeleter>;
using PubAckPtr = std::unique_ptr<jsPubAck, PubAckDeleter>;
using ConsumerInfoPtr = std::unique_ptr<jsConsumerInfo, ConsumerInfoDeleter>;

constexpr int kDefaultPort = 4222;

// "nats://host:port,nats://host2:port" with the password hidden, for logs.
std::string display_servers(const brokers::BrokerUrl& url);

// How a Connection is set up. The defaults suit both roles; the publisher
// turns `buffer_while_reconnecting` off.
struct ConnectionOptions {
  std::string role;  // "publisher", "consumer": prefixes the log lines
  std::string name;  // shown by nats-server (/connz); empty = "txbox-<role>"
  // When no server answers at construction: keep trying in the background
  // (publisher) instead of throwing BrokerError (consumer).
  bool retry_initial = false;
  // cnats keeps what is written while reconnecting (8 MB by default) and
  // sends it after the reconnect; messages lost with the old connection are
  // then behind later ones. false: no reconnect buffer, a publish while
  // reconnecting fails at once with NATS_INSUFFICIENT_BUFFER (cnats 3.4.1,
  // src/pub.c; pinned by tests/nats/fault/nats_publisher_fault_test.cpp).
  bool buffer_while_reconnecting = true;
  std::chrono::milliseconds reconnect_wait{500};
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds ping_interval{5000};
  int max_pings_out = 2;
};

// One cnats connection with infinite reconnects. Callbacks never throw into
// cnats. On destruction the connection is closed and, as far as cnats
// allows, every callback has returned.
class Connection {
 public:
  // Throws txbox::UsageError for a bad URL (wrong scheme, path, ...),
  // BrokerError when no server answers and !options.retry_initial.
  Connection(const brokers::BrokerUrl& url, ConnectionOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* get() const noexcept { return nc_; }
  // Up, as far as cnats knows right now (no round trip).
  bool connected() const noexcept;
  // How many times cnats re-established the connection since it was
  // created (counted synchronously by cnats, unlike the callbacks). A PubAck
  // for a message sent before a reconnect can no longer arrive.
  uint64_t reconnects() const noexcept;
  const std::string& servers() const noexcept { return servers_; }
  // The connection's state in words ("connected", "reconnecting", ...).
  std::string status_text() const;
  // A new JetStream context; throws BrokerError.
  JsPtr jetstream(const jsOptions* options = nullptr) const;

 private:
  static void on_connected(natsConnection* nc, void* closure) noexcept;
  static void on_disconnected(natsConnection* nc, void* closure) noexcept;
  static void on_reconnected(natsConnection* nc, void* closure) noexcept;
  static void on_closed(natsConnection* nc, void* closure) noexcept;
  static void on_error(natsConnection* nc, natsSubscription* sub, natsStatus err,
                       void* closure) noexcept;
  void set_connected(bool connected, const char* what) noexcept;

  ConnectionOptions options_;
  std::string servers_;
  natsConnection* nc_ = nullptr;
  std::atomic<bool> connected_{false};
  std::atomic<bool> closing_{false};  // no state-change logs while closing
  std::mutex closed_mutex_;
  std::condition_variable closed_cv_;
  bool closed_ = false;
};

// Name and text of a cnats status, e.g. "NATS_TIMEOUT (Timeout)".
std::string status_name(natsStatus s);

// Replaces every character outside [A-Za-z0-9_-] by '_' (stream and
// consumer names may not contain '.', '*', '>', spaces or slashes).
std::string sanitize_name(const std::string& subject);

}  // namespace txbox::nats::detail
