#include "batch_plan.hpp"

#include <fmt/format.h>

#include <unordered_map>

namespace txbox::redis::detail {

std::optional<std::string> destination_refusal(std::string_view destination) {
  if (destination.empty())
    return std::string("the destination (stream key) is empty: give every message the stream it goes to; not retried");
  if (destination.starts_with(kReservedPrefix))
    return fmt::format(
        "stream key '{}' starts with '{}', the prefix of the keys txbox keeps for itself (its dedup "
        "keys); a destination may not start with '{}': choose another stream name; not retried",
        destination, kReservedPrefix, kReservedPrefix);
  return std::nullopt;
}

std::string dedup_key(std::string_view stream, std::string_view message_id) {
  return fmt::format("{}dedup:{}:{}", kReservedPrefix, stream, message_id);
}

std::vector<std::optional<size_t>> predecessors(std::span<const brokers::Message> messages,
                                                const std::vector<bool>& sent) {
  std::vector<std::optional<size_t>> result(messages.size());
  std::unordered_map<std::string_view, size_t> last_of_key;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!sent[i] || !messages[i].key) continue;
    auto [it, first] = last_of_key.try_emplace(*messages[i].key, i);
    if (!first) {
      result[i] = it->second;
      it->second = i;
    }
  }
  return result;
}

std::vector<Resend> second_round(std::span<const brokers::Message> messages, std::span<const FirstRound> outcomes) {
  std::vector<Resend> resends;
  // Stored, or sent again behind a predecessor that can be stored: the
  // script may store it.
  std::vector<bool> can_be_stored(messages.size(), false);
  std::unordered_map<std::string_view, size_t> last_of_key;  // the last message not removed
  for (size_t i = 0; i < messages.size(); ++i) {
    if (outcomes[i] == FirstRound::removed) continue;
    std::optional<size_t> predecessor;
    if (messages[i].key) {
      auto it = last_of_key.find(*messages[i].key);
      if (it != last_of_key.end()) predecessor = it->second;
      last_of_key[*messages[i].key] = i;
    }
    const bool predecessor_ok = !predecessor || can_be_stored[*predecessor];
    // A NOSCRIPT message goes again even behind a failed predecessor: the
    // script then refuses it, which is its true result.
    if (outcomes[i] == FirstRound::noscript || (outcomes[i] == FirstRound::chain_refused && predecessor_ok)) {
      resends.push_back({i, predecessor});
      can_be_stored[i] = predecessor_ok;
    } else {
      can_be_stored[i] = outcomes[i] == FirstRound::stored;
    }
  }
  return resends;
}

}  // namespace txbox::redis::detail
