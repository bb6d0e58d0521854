// The relay's memory is bounded by --max-batch-bytes, whatever the payload
// sizes: rows of 20 MB in one lane are published one at a time, and the
// relay's peak resident memory stays under 3 x --max-batch-bytes + 64 MB.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <pqxx/pqxx>
#include <fstream>
#include <thread>

#include "../fault/fault_support.hpp"
#include "support/process.hpp"
#include "support/test_env.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

namespace {
// VmHWM (peak resident set) of a running process in KiB, 0 once it is gone.
long peak_rss_kib(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
  return 0;
}
}  // namespace

TEST_CASE("rows of 20 MB in one lane: the relay's peak memory stays under 3 x --max-batch-bytes + 64 MB",
          "[relay][memory]") {
  constexpr int kRows = 12;
  constexpr long kRowBytes = 20L << 20;
  auto url = test::create_database("bigrows");
  auto stream = test::unique_name("big");
  {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    tx.exec0(fmt::format("INSERT INTO txbox.outbox (destination, message_key, payload) "
                         "SELECT {}, 'one-key', convert_to(repeat(chr(97 + i % 26), {}), 'UTF8') "
                         "FROM generate_series(1, {}) i",
                         tx.quote(stream), kRowBytes, kRows));
  }
  // The stream keeps one entry (MAXLEN): Redis need not hold 240 MB.
  test::Process relay({test::binary_path("txbox-relay"), "--database-url", url, "--broker-url",
                       test::redis_url() + "?maxlen=1", "--drain", "--poll-interval", "50"},
                      "/tmp/" + stream + ".log");
  long peak = 0;
  while (relay.running()) {
    peak = std::max(peak, peak_rss_kib(relay.pid()));
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(relay.wait(10s) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
  const long limit_kib = (3 * (16L << 20) + (64L << 20)) / 1024;
  INFO(fmt::format("peak RSS {} MiB with {} rows of 20 MB (limit {} MiB)", peak / 1024, kRows, limit_kib / 1024));
  CHECK(peak > 0);
  CHECK(peak < limit_kib);
}
