#include "txbox/brokers/wire.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace txbox::brokers::wire {

namespace {

// One line: header values travel in line-based protocols (NATS).
std::string one_line(std::string text) {
  std::replace_if(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
  return text;
}

}  // namespace

Headers dead_letter_headers(const DeadLetter& letter) {
  Headers headers;
  headers.reserve(6);
  headers.emplace_back(kDlqError, one_line(letter.error));
  headers.emplace_back(kDlqErrorClass, one_line(letter.error_class));
  headers.emplace_back(kDlqAttempts, std::to_string(letter.attempts));
  headers.emplace_back(kDlqOriginalDestination, one_line(letter.original_destination));
  if (!letter.original_position.empty())
    headers.emplace_back(kDlqOriginalPosition, one_line(letter.original_position));
  headers.emplace_back(kDlqTimestamp, rfc3339_utc(letter.at));
  return headers;
}

bool is_dead_letter_header(std::string_view name) noexcept { return name.starts_with(kDeadLetterPrefix); }

void add_dead_letter_headers(Headers& headers, const DeadLetter& letter) {
  std::erase_if(headers, [](const auto& header) { return is_dead_letter_header(header.first); });
  auto added = dead_letter_headers(letter);
  headers.insert(headers.end(), std::make_move_iterator(added.begin()), std::make_move_iterator(added.end()));
}

std::string rfc3339_utc(std::chrono::system_clock::time_point at) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(at);
  const auto day = floor<days>(ms);
  const year_month_day date{day};
  const hh_mm_ss<milliseconds> time{ms - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()), time.hours().count(),
                     time.minutes().count(), time.seconds().count(), time.subseconds().count());
}

}  // namespace txbox::brokers::wire
