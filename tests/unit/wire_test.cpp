#include <catch2/catch.hpp>

#include "txbox/brokers/wire.hpp"

namespace wire = txbox::brokers::wire;
using txbox::brokers::Headers;
using Clock = std::chrono::system_clock;

namespace {

Clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s, int ms) {
  using namespace std::chrono;
  return sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s} + milliseconds{ms};
}

}  // namespace

TEST_CASE("rfc3339_utc: UTC, milliseconds, Z", "[wire]") {
  CHECK(wire::rfc3339_utc(utc(2026, 11, 29, 7, 55, 1, 123)) == "2026-11-29T07:55:01.123Z");
  CHECK(wire::rfc3339_utc(Clock::time_point{}) == "1970-01-01T00:00:00.000Z");
  CHECK(wire::rfc3339_utc(utc(2024, 2, 29, 23, 59, 59, 999)) == "2024-02-29T23:59:59.999Z");
  // Sub-millisecond digits are cut, not rounded up into the next second.
  CHECK(wire::rfc3339_utc(utc(2026, 1, 2, 3, 4, 5, 999) + std::chrono::microseconds(999)) ==
        "2026-01-02T03:04:05.999Z");
  // Before the epoch: floor, not towards zero.
  CHECK(wire::rfc3339_utc(Clock::time_point{} - std::chrono::milliseconds(1)) == "1969-12-31T23:59:59.999Z");
}

TEST_CASE("dead_letter_headers: the one set, in order", "[wire]") {
  const Headers headers = wire::dead_letter_headers({.error = "broker said no",
                                                     .error_class = "permanent",
                                                     .attempts = 3,
                                                     .original_destination = "orders",
                                                     .original_position = "3/1234",
                                                     .at = utc(2026, 11, 29, 7, 55, 1, 123)});
  const Headers expected{{"dlq-error", "broker said no"},
                         {"dlq-error-class", "permanent"},
                         {"dlq-attempts", "3"},
                         {"dlq-original-destination", "orders"},
                         {"dlq-original-position", "3/1234"},
                         {"dlq-timestamp", "2026-11-29T07:55:01.123Z"}};
  CHECK(headers == expected);
}

TEST_CASE("dead_letter_headers: no position header where there is none, one-line values", "[wire]") {
  const Headers headers = wire::dead_letter_headers(
      {.error = "handler failed:\r\nbad payload\n", .error_class = "handler", .attempts = 1, .original_destination = "s"});
  REQUIRE(headers.size() == 5);
  for (const auto& [name, value] : headers) CHECK(name != wire::kDlqOriginalPosition);
  CHECK(headers[0] == std::pair<std::string, std::string>{"dlq-error", "handler failed:  bad payload "});
  CHECK(headers[4].first == "dlq-timestamp");
  CHECK(headers[4].second.size() == std::string("2026-11-29T07:55:01.123Z").size());
  CHECK(headers[4].second.back() == 'Z');
}

TEST_CASE("add_dead_letter_headers replaces an earlier death's headers and keeps the others", "[wire]") {
  Headers headers{{"content-type", "application/json"},
                  {"dlq-error", "first death"},
                  {"dlq-original-topic", "old name"},  // an earlier dialect's
                  {"trace", "t-1"}};
  wire::add_dead_letter_headers(headers, {.error = "second death", .error_class = "transient", .attempts = 10});
  REQUIRE(headers.size() == 2 + 5);
  CHECK(headers[0].first == "content-type");
  CHECK(headers[1].first == "trace");
  CHECK(headers[2] == std::pair<std::string, std::string>{"dlq-error", "second death"});
  CHECK(headers[3].second == "transient");
  CHECK(headers[4].second == "10");
  CHECK(headers[5] == std::pair<std::string, std::string>{"dlq-original-destination", ""});
  CHECK(headers[6].first == "dlq-timestamp");
}

TEST_CASE("the wire names", "[wire]") {
  CHECK(wire::kMessageId == "message-id");
  CHECK(wire::kMessageKey == "message-key");
  CHECK(wire::kContentType == "content-type");
  CHECK(wire::kTraceparent == "traceparent");
  CHECK(wire::is_dead_letter_header("dlq-anything"));
  CHECK_FALSE(wire::is_dead_letter_header("message-id"));
  CHECK_FALSE(wire::is_dead_letter_header("x-dlq-error"));
}
