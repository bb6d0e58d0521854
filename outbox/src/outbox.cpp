#include "txbox/outbox/outbox.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>

#include "txbox/outbox/store.hpp"

namespace txbox::outbox {
namespace {

std::string headers_json(const Message& message) {
  nlohmann::json object = nlohmann::json::object();
  for (const auto& [name, value] : message.headers) object[name] = value;
  try {
    return object.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InvalidMessage(fmt::format(
        "outbox message for '{}' has a header that is not valid UTF-8 ({}); headers must be "
        "UTF-8 text, put binary data in the payload",
        message.destination, e.what()));
  }
}

// The message's id: its own (checked) or a new random one.
std::string checked_id(const Message& message) {
  if (message.destination.empty())
    throw InvalidMessage(
        "outbox message has an empty destination: set Message::destination to the topic, "
        "exchange, subject or stream it goes to");
  if (!message.message_id) return new_message_id();
  if (!is_uuid(*message.message_id))
    throw InvalidMessage(fmt::format(
        "outbox message id '{}' is not a UUID (expected 8-4-4-4-12 hex digits); leave "
        "Message::message_id empty to get a random one",
        *message.message_id));
  return *message.message_id;
}

// bytea's hex input form: \x0a1b...
std::string bytea_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "\\x";
  out.reserve(2 + 2 * bytes.size());
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

}  // namespace

Outbox::Outbox(OutboxOptions options)
    : options_(std::move(options)),
      insert_sql_(options_.schema.adapt(
          "INSERT INTO txbox.outbox (message_id, destination, message_key, payload, headers) "
          "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[])")) {}

std::string Outbox::enqueue(pqxx::transaction_base& tx, const Message& message) const {
  return enqueue(tx, std::span<const Message>(&message, 1)).front();
}

std::vector<std::string> Outbox::enqueue(pqxx::transaction_base& tx,
                                         std::span<const Message> messages) const {
  std::vector<std::string> ids;
  if (messages.empty()) return ids;
  // Every value travels as a statement parameter: one array per column,
  // unnested into rows in the given order (one statement, one round trip).
  std::vector<std::string> destinations, payloads, headers;
  std::vector<std::optional<std::string>> keys;
  for (const auto& message : messages) {
    ids.push_back(checked_id(message));
    destinations.push_back(message.destination);
    keys.push_back(message.key);
    payloads.push_back(bytea_hex(message.payload));
    headers.push_back(headers_json(message));
  }
  tx.exec_params0(insert_sql_, pg_array(ids), pg_array(destinations), pg_array(keys), pg_array(payloads),
                  pg_array(headers));
  return ids;
}

std::string new_message_id() {
  thread_local std::mt19937_64 generator{[] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }()};
  uint64_t high = generator(), low = generator();
  high = (high & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  low = (low & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;    // RFC 4122 variant
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", high >> 32, (high >> 16) & 0xffff,
                     high & 0xffff, low >> 48, low & 0xffffffffffffULL);
}

bool is_uuid(std::string_view text) noexcept {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(text[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace txbox::outbox
