#include "txbox/metrics/http_endpoint.hpp"

#include <httplib.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "txbox/core/error.hpp"

namespace txbox::metrics {

struct HttpEndpoint::Impl {
  httplib::Server server;
  std::thread thread;
};

namespace {
void answer(httplib::Response& response, const CheckResult& result) {
  response.status = result.ok ? 200 : 503;
  response.set_content(result.body + "\n", "application/json");
}
}  // namespace

HttpEndpoint::HttpEndpoint(const ListenAddress& address, EndpointHandlers handlers) : impl_(std::make_unique<Impl>()) {
  auto& server = impl_->server;
  server.Get("/metrics", [registry = handlers.registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry ? registry->render() : std::string(), std::string(kContentType).c_str());
  });
  server.Get("/healthz", [health = handlers.health](const httplib::Request&, httplib::Response& response) {
    answer(response, health ? health() : CheckResult{true, R"({"healthy":true})"});
  });
  server.Get("/readyz", [ready = handlers.ready](const httplib::Request&, httplib::Response& response) {
    answer(response, ready ? ready() : CheckResult{true, R"({"ready":true})"});
  });
  // A handler's exception is a 500 with no details (they could name
  // internals); the handlers here do not throw on purpose.
  server.set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
    response.status = 500;
    response.set_content("internal error\n", "text/plain");
  });
  // SO_REUSEADDR only: cpp-httplib's default SO_REUSEPORT would let a second
  // process bind the same port and share its requests, instead of failing.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  errno = 0;
  if (address.port == 0) {
    port_ = server.bind_to_any_port(address.host.c_str());
  } else if (server.bind_to_port(address.host.c_str(), address.port)) {
    port_ = address.port;
  } else {
    port_ = -1;
  }
  if (port_ <= 0) {
    const int error = errno;
    throw txbox::Error(
        txbox::ErrorKind::unavailable,
        "cannot listen on " + address.host + ":" + std::to_string(address.port) + ": " +
            (error == EADDRINUSE ? std::string("the port is in use by another process")
                                 : error != 0 ? std::string(std::strerror(error))
                                              : std::string("the host is not an address of this machine")),
        "choose a free port, or an address of this machine (127.0.0.1, 0.0.0.0)");
  }
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // stop() before the loop runs would be lost (and the destructor's join
  // would wait forever): return once it runs.
  while (!impl_->server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

HttpEndpoint::~HttpEndpoint() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace txbox::metrics
