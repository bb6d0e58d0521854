#include "destination.hpp"

#include <fmt/format.h>

namespace txbox::rabbitmq::detail {

namespace {
constexpr std::size_t kShortStringMax = 255;  // AMQP shortstr: one length byte
constexpr std::string_view kReservedPrefix = "amq.";
}  // namespace

Target split_destination(const std::string& destination) {
  auto slash = destination.find('/');
  if (slash == std::string::npos) return {"", destination};
  return {destination.substr(0, slash), destination.substr(slash + 1)};
}

std::string where(const Target& t) {
  if (t.exchange.empty()) return fmt::format("the default exchange, routing key (queue) '{}'", t.routing_key);
  return fmt::format("exchange '{}' routing key '{}'", t.exchange, t.routing_key);
}

std::size_t header_frame_size(const brokers::Message& message) {
  // frame header 7 + end 1; class, weight, body size 12; property flags 2;
  // delivery mode 1; message id shortstr; headers table (4-byte length).
  std::size_t size = 7 + 1 + 12 + 2 + 1 + 1 + message.message_id.size() + 4;
  auto entry = [](std::size_t name, std::size_t value) { return 1 + name + 1 + 4 + value; };
  for (const auto& [name, value] : message.headers) {
    if (name == kMessageIdHeader || name == kMessageKeyHeader) continue;  // replaced by ours
    if (name == kContentTypeHeader) size += 1 + value.size();             // also the property
    size += entry(name.size(), value.size());
  }
  size += entry(std::string_view(kMessageIdHeader).size(), message.message_id.size());
  if (message.key) size += entry(std::string_view(kMessageKeyHeader).size(), message.key->size());
  return size;
}

std::optional<std::string> refuse_reason(const brokers::Message& message, const Target& target,
                                         std::size_t frame_max) {
  if (target.exchange.starts_with(kReservedPrefix)) {
    return fmt::format(
        "destination '{}' names exchange '{}': exchanges starting with 'amq.' are RabbitMQ's own (amq.direct, "
        "amq.topic, amq.rabbitmq.trace, ...) and txbox does not publish to them; declare an exchange of your own "
        "and bind your queues to it (not retried)",
        message.destination, target.exchange);
  }
  auto too_long = [&](std::string_view what, std::size_t size) {
    return fmt::format("{} of the message to {} is {} bytes long: AMQP allows at most {}; shorten it (not retried)",
                       what, message.destination, size, kShortStringMax);
  };
  if (target.exchange.size() > kShortStringMax) return too_long("the exchange name", target.exchange.size());
  if (target.routing_key.size() > kShortStringMax) {
    return too_long(target.exchange.empty() ? "the queue name" : "the routing key", target.routing_key.size());
  }
  if (message.message_id.size() > kShortStringMax) return too_long("the message id", message.message_id.size());
  for (const auto& [name, value] : message.headers) {
    if (name.size() > kShortStringMax) return too_long(fmt::format("header name '{:.40}...'", name), name.size());
    if (name == kContentTypeHeader && value.size() > kShortStringMax) {
      return too_long("the content-type header", value.size());
    }
  }
  if (std::size_t size = header_frame_size(message); size > frame_max) {
    return fmt::format(
        "the headers of the message to {} take {} bytes, more than one AMQP frame ({} bytes) can carry; send "
        "fewer or smaller headers (not retried)",
        message.destination, size, frame_max);
  }
  return std::nullopt;
}

}  // namespace txbox::rabbitmq::detail
