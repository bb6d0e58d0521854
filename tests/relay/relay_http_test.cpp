// The relay's operators' endpoint (--http-listen): /metrics in the
// Prometheus format (checked by promtool) counting what the relay did,
// /healthz, /readyz naming the failing check, and bad or busy addresses.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <pqxx/pqxx>
#include <thread>

#include "../fault/fault_support.hpp"
#include "kafka_support.hpp"
#include "support/private_pg.hpp"
#include "support/process.hpp"
#include "support/promtool.hpp"
#include "txbox/metrics/http_endpoint.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

// The relay in this process on a thread, with its endpoint on a free port.
struct RunningRelay {
  explicit RunningRelay(txbox::relay::RelayOptions options) {
    port = test::free_port();
    options.http_listen = "127.0.0.1:" + std::to_string(port);
    options.drain = false;
    relay = std::make_unique<txbox::relay::Relay>(options);
    thread = std::jthread([this](std::stop_token stop) {
      try {
        relay->run(stop);
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
  }
  ~RunningRelay() {
    thread.request_stop();
    thread.join();
  }
  // Status and body of GET `path` (status 0: no answer).
  std::pair<int, std::string> get(const std::string& path) const {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(5);
    client.set_read_timeout(10);
    auto response = client.Get(path.c_str());
    if (!response) return {0, ""};
    return {response->status, response->body};
  }
  // The first answer of GET `path` with `status`, REQUIREd within `timeout`.
  std::pair<int, std::string> await_status(const std::string& path, int status, std::chrono::milliseconds timeout) {
    std::pair<int, std::string> answer;
    const bool got = test::wait_for(
        [&] {
          answer = get(path);
          return answer.first == status;
        },
        timeout);
    INFO("last answer of " << path << ": " << answer.first << " " << answer.second);
    REQUIRE(got);
    return answer;
  }

  int port = 0;
  std::unique_ptr<txbox::relay::Relay> relay;
  std::string error;
  std::jthread thread;
};

}  // namespace

TEST_CASE("relay --http-listen: /metrics passes promtool and counts the published messages by destination, "
          "/healthz and /readyz answer 200",
          "[relay][http]") {
  auto url = test::create_database("httpmetrics");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, 500, 10);
  RunningRelay relay(test::kafka_relay_options(url));
  const std::string published = "txbox_relay_messages_published_total{destination=\"" + topic + "\"} 500\n";
  std::string metrics;
  REQUIRE(test::wait_for(
      [&] {
        metrics = relay.get("/metrics").second;
        return metrics.find(published) != std::string::npos;
      },
      2min));
  INFO(metrics);
  CHECK(test::promtool_complaints(metrics).empty());
  CHECK_THAT(metrics, Contains("txbox_relay_message_delay_seconds_count 500\n"));
  CHECK_THAT(metrics, Contains("txbox_relay_broker_up 1\n"));
  CHECK_THAT(metrics, Contains("txbox_relay_workers 4\n"));
  CHECK_THAT(metrics, Contains("txbox_relay_lanes_owned 256\n"));
  CHECK_THAT(metrics, Contains("txbox_build_info{version=\""));
  CHECK_THAT(metrics, Contains("process_resident_memory_bytes "));
  CHECK(relay.get("/healthz") == std::pair<int, std::string>{200, "{\"healthy\":true}\n"});
  CHECK(relay.get("/readyz") == std::pair<int, std::string>{200, "{\"ready\":true}\n"});
  CHECK(relay.error.empty());
}

TEST_CASE("relay /readyz: 503 naming the database while PostgreSQL is down, 200 again once it is back",
          "[relay][http][fault]") {
  test::PrivatePostgres pg;
  auto url = pg.create_database("httpready");
  RunningRelay relay(test::kafka_relay_options(url));
  relay.await_status("/readyz", 200, 1min);
  pg.stop();
  const auto answer = relay.await_status("/readyz", 503, 1min);
  CHECK_THAT(answer.second, Contains("{\"failing\":\"database\",\"ready\":false,\"reason\":\""));
  CHECK(std::count(answer.second.begin(), answer.second.end(), '\n') == 1);  // one line
  CHECK(relay.get("/healthz").first == 200);  // the process is alive, only not ready
  pg.start();
  relay.await_status("/readyz", 200, 1min);
}

TEST_CASE("relay /readyz: 503 naming the broker while it cannot be reached", "[relay][http]") {
  auto url = test::create_database("httpbroker");
  test::fill_outbox(url, test::unique_name("orders"), 10, 2);
  auto options = test::kafka_relay_options(url);
  options.broker_url = "kafka://127.0.0.1:1";
  options.publish_timeout = 2s;
  options.probe_timeout = 500ms;
  RunningRelay relay(options);
  const auto answer = relay.await_status("/readyz", 503, 2min);
  CHECK_THAT(answer.second, Contains("\"failing\":\"broker\""));
  // The gauge follows the relay's outage state: set once a batch found the
  // broker down (the client may say so a moment earlier).
  CHECK(test::wait_for(
      [&] { return relay.get("/metrics").second.find("txbox_relay_broker_up 0\n") != std::string::npos; }, 1min));
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.outbox") == 10);  // nothing lost meanwhile
}

TEST_CASE("txbox-relay --http-listen: a malformed address exits 2 naming the option, a busy port exits 1 with "
          "one clear line",
          "[relay][http]") {
  auto url = test::create_database("httpbad");
  auto bad = test::run({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                        "kafka://" + test::kafka_bootstrap(), "--http-listen", "localhost"},
                       60s);
  INFO(bad.output);
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.output, Contains("--http-listen 'localhost': no port") && Contains("HOST:PORT"));

  txbox::metrics::Registry registry;
  txbox::metrics::HttpEndpoint squatter({"127.0.0.1", 0}, {&registry, {}, {}});
  auto busy = test::run({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                         "kafka://" + test::kafka_bootstrap(), "--http-listen",
                         "127.0.0.1:" + std::to_string(squatter.port())},
                        60s);
  INFO(busy.output);
  CHECK(busy.exit_code == 1);
  CHECK_THAT(busy.output, Contains("cannot listen on 127.0.0.1:" + std::to_string(squatter.port()) +
                                   ": the port is in use by another process"));
  CHECK(test::count_lines_with(busy.output, "error") == 1);
}
