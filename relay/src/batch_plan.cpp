#include "batch_plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "backoff.hpp"

namespace txbox::relay {

const char* to_string(RowAction action) noexcept {
  switch (action) {
    case RowAction::remove: return "remove";
    case RowAction::retry: return "retry";
    case RowAction::dead_letter: return "dead_letter";
    case RowAction::held_back: return "held_back";
    case RowAction::untouched: return "untouched";
  }
  return "unknown";
}

bool needs_probe(std::span<const brokers::PublishResult> results) {
  bool confirmed = false, permanent = false, failed = false;
  for (const auto& r : results) {
    if (!r.confirmed && r.error_class == brokers::ErrorClass::transient) return true;
    confirmed = confirmed || r.confirmed;
    permanent = permanent || (!r.confirmed && r.error_class == brokers::ErrorClass::permanent);
    failed = failed || !r.confirmed;
  }
  // Only outage-class failures (not handed over): the whole broker may be
  // down, unless something went through.
  return failed && !confirmed && !permanent;
}

namespace {

std::string format_age(std::chrono::seconds age) {
  auto s = age.count();
  if (s < 120) return fmt::format("{} s", s);
  if (s < 7200) return fmt::format("{} min", s / 60);
  if (s < 172800) return fmt::format("{} h", s / 3600);
  return fmt::format("{} days", s / 86400);
}

}  // namespace

BatchPlan plan_batch(std::span<const PlanRow> rows, std::span<const brokers::PublishResult> results,
                     const RetryOptions& retry, SystemTime now, bool broker_down,
                     const std::function<double()>& jitter) {
  using brokers::ErrorClass;
  BatchPlan plan;
  plan.rows.resize(rows.size());
  plan.outage = broker_down;
  // Keys whose earlier row of this batch did not go through: their later
  // rows stay where they are and go after it.
  std::unordered_set<std::string_view> blocked_keys;
  for (size_t i = 0; i < rows.size(); ++i) {
    const PlanRow& row = rows[i];
    const brokers::PublishResult& result = results[i];
    RowDecision& decision = plan.rows[i];
    decision.error_class = result.error_class;
    const bool keyed = row.key != nullptr;
    if (keyed && blocked_keys.contains(*row.key)) {
      decision.action = RowAction::held_back;
      ++plan.held_back;
      if (result.confirmed) ++plan.confirmed_held_back;
      continue;
    }
    if (result.confirmed) {
      decision.action = RowAction::remove;
      ++plan.removed;
      continue;
    }
    if (result.error_class == ErrorClass::permanent) {
      decision.action = RowAction::dead_letter;
      decision.reason = result.error;
      ++plan.dead_lettered;
      continue;
    }
    if (plan.outage || result.error_class == ErrorClass::outage) {
      decision.action = RowAction::untouched;
      decision.reason = result.error;
      ++plan.untouched;
      if (keyed) blocked_keys.insert(*row.key);
      continue;
    }
    // Transient: retry, unless the budget (a count and a time) is spent.
    const int attempt = row.attempts + 1;
    const auto failing_for = std::chrono::duration_cast<std::chrono::seconds>(
        now - row.first_failed_at.value_or(now));
    if (attempt >= retry.max_attempts && failing_for >= retry.max_retry_age) {
      decision.action = RowAction::dead_letter;
      decision.reason = fmt::format("gave up after {} attempts over {}: {}", attempt,
                                    format_age(failing_for), result.error);
      ++plan.dead_lettered;
      continue;
    }
    decision.action = RowAction::retry;
    decision.delay = backoff_delay(retry, attempt, jitter());
    decision.reason = fmt::format("{} error: {}", brokers::to_string(result.error_class), result.error);
    ++plan.retried;
    if (keyed) blocked_keys.insert(*row.key);
  }
  return plan;
}

}  // namespace txbox::relay
