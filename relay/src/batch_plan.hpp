#pragma once
// The batch plan: what happens to each row of a published batch, decided
// from the rows and the broker's per-message results alone. Pure (the only
// outside input, the jitter of retry delays, is a parameter), so unit tests
// cover every rule without a server.
//
// Rules, in batch order (rows are in id order per key):
// - confirmed                         -> delete
// - failed permanently                -> dead letter
// - failed transiently                -> retry after a backoff, attempts + 1;
//   or dead letter once the retry budget is spent: attempts >= max_attempts
//   AND the row has been failing for >= max_retry_age (both: a partial
//   outage that lasts must not dead-letter the first row of every key)
// - failed with class outage          -> untouched (no attempt counted)
// - a later row of a key whose earlier row in this batch is retried,
//   untouched or held back            -> held back (left as it is, even if
//   the broker confirmed it: it goes again after the earlier row)
// When nothing was confirmed, nothing failed permanently and the broker is
// down as a whole (the caller probed it), the batch is an outage: every row
// that did not fail permanently is untouched.

#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "txbox/brokers/message.hpp"
#include "txbox/relay/options.hpp"

namespace txbox::relay {

using SystemTime = std::chrono::system_clock::time_point;

// What the plan needs to know of a claimed row.
struct PlanRow {
  const std::string* key = nullptr;  // nullptr: no key (no order promised)
  int attempts = 0;                  // failed attempts before this one
  std::optional<SystemTime> first_failed_at;
};

enum class RowAction {
  remove,       // confirmed: delete the row
  retry,        // reschedule after `delay`, attempts + 1
  dead_letter,  // move to the dead-letter table with `reason`
  held_back,    // leave as it is: an earlier row of its key did not go through
  untouched,    // leave as it is: the broker was unavailable (no attempt counted)
};

const char* to_string(RowAction action) noexcept;

struct RowDecision {
  RowAction action = RowAction::untouched;
  brokers::ErrorClass error_class = brokers::ErrorClass::transient;  // of the failure
  std::chrono::milliseconds delay{0};  // retry
  std::string reason;                  // retry: the error; dead letter: why
};

struct BatchPlan {
  std::vector<RowDecision> rows;  // one per row, same order
  bool outage = false;            // the broker as a whole was unavailable
  size_t removed = 0, retried = 0, dead_lettered = 0, held_back = 0, untouched = 0;
  // Held-back rows the broker had confirmed: they go out again (a duplicate).
  size_t confirmed_held_back = 0;
};

// True when the batch might have met an outage: a message failed
// transiently, or nothing went through and nothing failed permanently. Also when others were confirmed: a broker that stops
// answering mid-batch confirms the first messages and times out the rest
// (found by CI). Give it the results of the messages that were sent (not of
// rows refused before sending); the caller then asks the broker
// (Publisher::probe, one answer a second for all workers) and passes
// `broker_down` to plan_batch, which still removes the confirmed rows and
// dead-letters the permanent failures.
bool needs_probe(std::span<const brokers::PublishResult> results);

// `results` has one entry per row. `broker_down`: the batch is an outage
// (see needs_probe). `jitter` returns a factor in [0.5, 1] for each retry
// delay (full jitter).
BatchPlan plan_batch(std::span<const PlanRow> rows, std::span<const brokers::PublishResult> results,
                     const RetryOptions& retry, SystemTime now, bool broker_down,
                     const std::function<double()>& jitter);

}  // namespace txbox::relay
