#include "batch.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace txbox::rabbitmq::detail {

using brokers::ErrorClass;
using brokers::PublishResult;

const char* to_string(Batch::State state) noexcept {
  switch (state) {
    case Batch::State::unsent: return "unsent";
    case Batch::State::in_flight: return "in_flight";
    case Batch::State::suspect: return "suspect";
    case Batch::State::settled: return "settled";
  }
  return "unknown";
}

Batch::Batch(std::span<const brokers::Message> messages)
    : messages_(messages), states_(messages.size(), State::unsent), results_(messages.size()),
      returns_(messages.size()) {
  targets_.reserve(messages.size());
  for (const auto& m : messages) targets_.push_back(split_destination(m.destination));
}

std::size_t Batch::count(State state) const {
  return static_cast<std::size_t>(std::count(states_.begin(), states_.end(), state));
}

std::size_t Batch::confirmed_count() const {
  return static_cast<std::size_t>(
      std::count_if(results_.begin(), results_.end(), [](const PublishResult& r) { return r.confirmed; }));
}

std::optional<std::size_t> Batch::first(State state) const {
  auto it = std::find(states_.begin(), states_.end(), state);
  if (it == states_.end()) return std::nullopt;
  return static_cast<std::size_t>(it - states_.begin());
}

void Batch::settle(std::size_t i, PublishResult result) {
  if (states_[i] == State::settled) return;
  if (states_[i] == State::in_flight) {
    auto it = std::find_if(in_flight_.begin(), in_flight_.end(), [&](const InFlight& f) { return f.index == i; });
    if (it != in_flight_.end()) in_flight_.erase(it);
  }
  states_[i] = State::settled;
  results_[i] = std::move(result);
}

void Batch::confirmed(std::size_t i) { settle(i, {true, ErrorClass::transient, {}}); }

void Batch::fail(std::size_t i, const Failure& failure) {
  if (states_[i] == State::settled) return;
  PublishResult result{false, classify(failure), describe(failure)};
  settle(i, result);
  if (result.error_class != ErrorClass::permanent) hold_back_after(i, result);
}

void Batch::hold_back_after(std::size_t i, const PublishResult& failed) {
  const auto& key = messages_[i].key;
  if (!key) return;  // no key, no order promised
  for (std::size_t j = i + 1; j < messages_.size(); ++j) {
    if (messages_[j].key != key) continue;
    if (states_[j] != State::unsent && states_[j] != State::suspect) continue;
    settle(j, {false, failed.error_class,
               fmt::format("not sent: message {} before it with the same key '{}' failed in this batch ({}); "
                           "will be retried after it",
                           messages_[i].message_id, *key, failed.error)});
  }
}

void Batch::fail_unsettled(const Failure& failure) {
  PublishResult result{false, classify(failure), describe(failure)};
  in_flight_.clear();
  for (std::size_t i = 0; i < messages_.size(); ++i) {
    if (states_[i] == State::settled) continue;
    states_[i] = State::settled;
    results_[i] = result;
  }
}

void Batch::published(std::size_t i, uint64_t delivery_tag) {
  states_[i] = State::in_flight;
  returns_[i].reset();
  in_flight_.push_back({delivery_tag, i});
}

void Batch::confirm(uint64_t delivery_tag, bool multiple, bool ack) {
  auto resolve = [&](std::size_t i) {
    if (!ack) {
      fail(i, {Cause::nack, 0, fmt::format("RabbitMQ nacked the message to {}", where(targets_[i]))});
    } else if (returns_[i]) {
      fail(i, *returns_[i]);
    } else {
      confirmed(i);
    }
  };
  if (multiple) {
    while (!in_flight_.empty() && in_flight_.front().tag <= delivery_tag) {
      std::size_t i = in_flight_.front().index;
      in_flight_.pop_front();  // settle() then finds nothing left to erase
      resolve(i);
    }
    return;
  }
  auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                         [&](const InFlight& f) { return f.tag == delivery_tag; });
  if (it == in_flight_.end()) return;  // an earlier channel's tag, or the probe's
  std::size_t i = it->index;
  in_flight_.erase(it);
  resolve(i);
}

void Batch::returned(const std::string& message_id, int code, const std::string& text) {
  for (const auto& f : in_flight_) {
    std::size_t i = f.index;
    if (returns_[i] || messages_[i].message_id != message_id) continue;
    const Target& t = targets_[i];
    std::string reason =
        t.exchange.empty()
            ? fmt::format("no queue named '{}' exists for the default exchange (RabbitMQ returned the message: {} "
                          "{}): declare the queue or fix the destination (not retried)",
                          t.routing_key, code, text)
            : fmt::format("no queue is bound for exchange '{}' routing key '{}' (RabbitMQ returned the message: {} "
                          "{}): declare and bind a queue (not retried)",
                          t.exchange, t.routing_key, code, text);
    returns_[i] = Failure{Cause::returned, code, std::move(reason)};
    return;
  }
}

void Batch::channel_closed(const Failure& failure) {
  for (const auto& f : in_flight_) states_[f.index] = State::suspect;
  in_flight_.clear();
  channel_failure_ = failure;
}

void Batch::suspects_to_unsent() {
  for (auto& s : states_) {
    if (s == State::suspect) s = State::unsent;
  }
}

std::vector<PublishResult> Batch::results(const std::string& deadline_text) const {
  std::vector<PublishResult> out = results_;
  const std::string channel_text =
      channel_failure_ ? describe(*channel_failure_) : std::string("the channel was closed");
  for (std::size_t i = 0; i < states_.size(); ++i) {
    Failure f{Cause::timeout, 0, {}};
    switch (states_[i]) {
      case State::settled:
        continue;
      case State::in_flight:
        f.text = deadline_text;
        break;
      case State::suspect:
        f.text = fmt::format(
            "RabbitMQ closed the channel while this message was unconfirmed ({}), and the deadline passed before "
            "it could be re-published alone to tell whether it was the cause; will be retried",
            channel_text);
        break;
      case State::unsent:
        f.text = channel_failure_
                     ? fmt::format("not published before the deadline: the batch was still recovering from a "
                                   "closed channel ({}); will be retried",
                                   channel_text)
                     : std::string("not published before the deadline; will be retried");
        break;
    }
    out[i] = {false, classify(f), describe(f)};
  }
  return out;
}

}  // namespace txbox::rabbitmq::detail
