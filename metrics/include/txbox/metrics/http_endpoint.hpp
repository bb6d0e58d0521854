#pragma once
// An HTTP endpoint for operators: GET /metrics (the Prometheus text), and
// GET /healthz and /readyz answered by the caller's checks. Served by
// cpp-httplib on a thread of its own.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "txbox/metrics/metrics.hpp"

namespace txbox::metrics {

struct ListenAddress {
  std::string host;  // an IPv4 or IPv6 address or a host name
  int port = 0;      // 0: a free port the system picks (see HttpEndpoint::port())
};

// "HOST:PORT" or "[IPv6]:PORT". Throws txbox::UsageError naming `what` (the
// option, e.g. "--http-listen") and the expected form.
ListenAddress parse_listen_address(std::string_view text, std::string_view what);

// A check's answer: 200 with a body, or 503 with one naming what failed.
struct CheckResult {
  bool ok = true;
  std::string body;  // one line of JSON
};

struct EndpointHandlers {
  const Registry* registry = nullptr;   // GET /metrics
  std::function<CheckResult()> health;  // GET /healthz
  std::function<CheckResult()> ready;   // GET /readyz
};

class HttpEndpoint {
 public:
  // Binds and starts serving. Throws txbox::Error (kind unavailable) when
  // the address cannot be bound: the port is in use, or the host is not an
  // address of this machine.
  HttpEndpoint(const ListenAddress& address, EndpointHandlers handlers);
  ~HttpEndpoint();  // stops serving
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  int port() const noexcept { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace txbox::metrics
