#include "txbox/outbox/outbox.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>

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

std::string row_values(pqxx::transaction_base& tx, const Message& message, std::string& id_out) {
  if (message.destination.empty())
    throw InvalidMessage(
        "outbox message has an empty destination: set Message::destination to the topic, "
        "exchange, subject or stream it goes to");
  if (message.message_id) {
    if (!is_uuid(*message.message_id))
      throw InvalidMessage(fmt::format(
          "outbox message id '{}' is not a UUID (expected 8-4-4-4-12 hex digits); leave "
          "Message::message_id empty to get a random one",
          *message.message_id));
    id_out = *message.message_id;
  } else {
    id_out = new_message_id();
  }
  std::string key = message.key ? tx.quote(*message.key) : "NULL";
  return fmt::format(
      "({}::uuid,{},{},{},{}::jsonb)", tx.quote(id_out), tx.quote(message.destination), key,
      tx.quote_raw(reinterpret_cast<const unsigned char*>(message.payload.data()),
                   message.payload.size()),
      tx.quote(headers_json(message)));
}

}  // namespace

Outbox::Outbox(OutboxOptions options) : options_(std::move(options)) {}

std::string Outbox::enqueue(pqxx::transaction_base& tx, const Message& message) const {
  return enqueue(tx, std::span<const Message>(&message, 1)).front();
}

std::vector<std::string> Outbox::enqueue(pqxx::transaction_base& tx,
                                         std::span<const Message> messages) const {
  std::vector<std::string> ids;
  if (messages.empty()) return ids;
  ids.resize(messages.size());
  std::string sql = fmt::format(
      "INSERT INTO {} (message_id, destination, message_key, payload, headers) VALUES ",
      options_.table);
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i) sql += ',';
    sql += row_values(tx, messages[i], ids[i]);
  }
  tx.exec0(sql);
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
