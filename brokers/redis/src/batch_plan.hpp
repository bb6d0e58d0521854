#pragma once
// Private to the Redis adapter (and its unit tests): the pure logic of a
// publish, reachable without a server: which destinations are refused, the
// dedup key of a message, and the per-key chain of a batch (which message
// must be stored before which).
//
// The chain: every message with a key names the dedup key of the previous
// message of the same key in the batch; the script stores a message only if
// that key exists, i.e. the previous message is in the stream. Replies in a
// pipeline are independent (an OOM, LOADING or BUSY can strike one command
// and spare the next), so without the chain a later message of a key could
// be stored after an earlier one failed.

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "txbox/brokers/message.hpp"

namespace txbox::redis::detail {

// Keys starting with this are txbox's own (the dedup keys): no destination
// may start with it.
inline constexpr std::string_view kReservedPrefix = "txbox:";

// Why a message to `destination` is refused without being sent (a permanent
// failure), or nullopt when the adapter may write to it.
std::optional<std::string> destination_refusal(std::string_view destination);

// The key whose existence records that `message_id` was stored in `stream`:
// txbox:dedup:<stream>:<message-id>.
std::string dedup_key(std::string_view stream, std::string_view message_id);

// For each message of a batch: the index of the previous message with the
// same key among those that are sent (`sent[i]`), or nullopt (no key, the
// first of its key, or not sent itself). Messages without a key are never
// chained.
std::vector<std::optional<size_t>> predecessors(std::span<const brokers::Message> messages,
                                                const std::vector<bool>& sent);

// What the first round of a batch did with one message.
enum class FirstRound {
  stored,         // an entry id or a duplicate: the stream holds it
  noscript,       // not run: the script cache had been flushed (NOSCRIPT)
  chain_refused,  // the script refused it: its predecessor was not stored
  failed,         // any other failure that will be retried: blocks its key
  removed,        // failed permanently or never sent: leaves the key's sequence
};

struct Resend {
  size_t index;                       // message to send again, in this order
  std::optional<size_t> predecessor;  // the message it now depends on
};

// The second round, run only when every reply of the first was read: the
// NOSCRIPT messages (after SCRIPT LOAD), and the messages refused by the
// chain whose predecessor is stored or sent again, which happens when the
// predecessor was NOSCRIPT or failed permanently ("a permanent failure
// removes that one message from the sequence"). Each one's predecessor is
// the previous message of its key that was not removed; a message behind a
// `failed` one stays refused.
std::vector<Resend> second_round(std::span<const brokers::Message> messages, std::span<const FirstRound> outcomes);

}  // namespace txbox::redis::detail
