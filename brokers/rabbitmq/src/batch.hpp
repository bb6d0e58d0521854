#pragma once
// Private to the RabbitMQ adapter (and its unit tests): the bookkeeping of
// one batch between start() and the end of wait(). No I/O: the publisher
// feeds it what it sent and what the broker answered, and asks it what to
// send next.
//
// Each message is in one of four states:
//   unsent     not (or no longer) on the wire; sent when its turn comes
//   in_flight  published on the current channel with a delivery tag, no
//              outcome yet
//   suspect    was in flight when the broker closed the channel: it may be
//              stored, or it may be the message that closed the channel;
//              resolved by re-publishing it alone ("isolation")
//   settled    has its result
//
// Order rule: when a message fails with anything but a permanent error, the
// later messages of its key that are not on the wire yet (unsent, suspect)
// are held back: they fail the same way without being sent, so the broker
// never stores them ahead of the failed one.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "destination.hpp"
#include "errors.hpp"
#include "txbox/brokers/message.hpp"

namespace txbox::rabbitmq::detail {

class Batch {
 public:
  enum class State : uint8_t { unsent, in_flight, suspect, settled };

  explicit Batch(std::span<const brokers::Message> messages);

  std::size_t size() const noexcept { return messages_.size(); }
  const brokers::Message& message(std::size_t i) const { return messages_[i]; }
  const Target& target(std::size_t i) const { return targets_[i]; }
  State state(std::size_t i) const { return states_[i]; }
  std::size_t in_flight() const noexcept { return in_flight_.size(); }
  std::size_t count(State state) const;
  std::size_t confirmed_count() const;
  // First message in `state`, in batch order.
  std::optional<std::size_t> first(State state) const;
  // The failure that closed the channel last (for the texts of suspects).
  const std::optional<Failure>& channel_failure() const noexcept { return channel_failure_; }

  // Outcomes decided by the publisher.
  void confirmed(std::size_t i);
  // Settles `i` with `failure`; unless permanent, holds back the later
  // unsent / suspect messages of its key.
  void fail(std::size_t i, const Failure& failure);
  // Every message without an outcome (unsent, in flight, suspect) fails
  // with `failure`: the connection is gone or blocked.
  void fail_unsettled(const Failure& failure);

  // Sending and the broker's answers on the current channel.
  void published(std::size_t i, uint64_t delivery_tag);
  // basic.ack / basic.nack; tags not in flight (an earlier channel, a probe)
  // are ignored. A returned message acked is a permanent failure.
  void confirm(uint64_t delivery_tag, bool multiple, bool ack);
  // basic.return: matched by message id against the messages in flight.
  void returned(const std::string& message_id, int code, const std::string& text);
  // channel.close: every message in flight becomes suspect.
  void channel_closed(const Failure& failure);
  // Suspects go back to unsent: once the message that closed the channel
  // has been found, the others are published the normal way again.
  void suspects_to_unsent();

  // One result per message. Messages without an outcome (the deadline
  // passed) are transient failures whose text says where they were.
  std::vector<brokers::PublishResult> results(const std::string& deadline_text) const;

 private:
  void settle(std::size_t i, brokers::PublishResult result);
  void hold_back_after(std::size_t i, const brokers::PublishResult& failed);

  std::span<const brokers::Message> messages_;
  std::vector<Target> targets_;
  std::vector<State> states_;
  std::vector<brokers::PublishResult> results_;
  std::vector<std::optional<Failure>> returns_;
  struct InFlight {
    uint64_t tag;
    std::size_t index;
  };
  std::deque<InFlight> in_flight_;  // ascending tags: the publish order on the channel
  std::optional<Failure> channel_failure_;
};

const char* to_string(Batch::State state) noexcept;

}  // namespace txbox::rabbitmq::detail
