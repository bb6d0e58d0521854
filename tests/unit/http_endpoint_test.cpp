// The operators' HTTP endpoint on loopback: /metrics, /healthz, /readyz,
// listen addresses, and a busy port.
#include <catch2/catch.hpp>
#include <httplib.h>

#include "txbox/core/error.hpp"
#include "txbox/metrics/http_endpoint.hpp"

namespace m = txbox::metrics;
using Catch::Matchers::Contains;

TEST_CASE("listen addresses: HOST:PORT and [IPv6]:PORT, anything else a clear usage error", "[unit][metrics]") {
  auto a = m::parse_listen_address("127.0.0.1:9464", "--http-listen");
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 9464);
  a = m::parse_listen_address("[::1]:0", "--http-listen");
  CHECK(a.host == "::1");
  CHECK(a.port == 0);
  CHECK(m::parse_listen_address("localhost:80", "x").host == "localhost");
  for (const char* bad : {"9464", "127.0.0.1", ":9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000",
                          "::1:9464", "[::1]9464", "127.0.0.1:-1"}) {
    INFO(bad);
    try {
      m::parse_listen_address(bad, "--http-listen");
      FAIL("accepted");
    } catch (const txbox::UsageError& e) {
      CHECK_THAT(e.what(), Contains("--http-listen '") && Contains("HOST:PORT"));
    }
  }
}

TEST_CASE("the endpoint serves the metrics text and the checks' answers; a busy port is a clear error",
          "[unit][metrics]") {
  m::Registry registry;
  registry.counter("txbox_test_requests_total", "Test counter.").with({}).inc(5);
  bool ready = true;
  m::HttpEndpoint endpoint({"127.0.0.1", 0}, {&registry, [] { return m::CheckResult{true, R"({"healthy":true})"}; },
                                              [&] {
                                                return ready ? m::CheckResult{true, R"({"ready":true})"}
                                                             : m::CheckResult{false, R"({"ready":false,"failing":"broker"})"};
                                              }});
  REQUIRE(endpoint.port() > 0);
  httplib::Client client("127.0.0.1", endpoint.port());
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->get_header_value("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK_THAT(metrics->body, Contains("txbox_test_requests_total 5\n"));
  auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  auto readiness = client.Get("/readyz");
  REQUIRE(readiness);
  CHECK(readiness->status == 200);
  ready = false;
  readiness = client.Get("/readyz");
  REQUIRE(readiness);
  CHECK(readiness->status == 503);
  CHECK(readiness->body == "{\"ready\":false,\"failing\":\"broker\"}\n");
  auto missing = client.Get("/nothing");
  REQUIRE(missing);
  CHECK(missing->status == 404);

  try {
    m::HttpEndpoint second({"127.0.0.1", endpoint.port()}, {&registry, {}, {}});
    FAIL("bound a busy port");
  } catch (const txbox::Error& e) {
    CHECK(e.kind() == txbox::ErrorKind::unavailable);
    CHECK_THAT(e.what(), Contains("cannot listen on 127.0.0.1:" + std::to_string(endpoint.port())) &&
                             Contains("in use"));
  }
}
