#pragma once
// Private to the RabbitMQ adapter (and its tests): where a message goes, and
// the checks that refuse a message before anything is sent for it.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"
#include "txbox/brokers/wire.hpp"

namespace txbox::rabbitmq::detail {

struct Target {
  std::string exchange;     // "" = the default exchange
  std::string routing_key;  // with the default exchange: the queue name
};

// "exchange/routing-key" (only the first '/' splits) or "queue-name" (the
// default exchange, routing key = the queue name).
Target split_destination(const std::string& destination);

// "exchange 'x' routing key 'k'" or "the default exchange, routing key (queue) 'q'".
std::string where(const Target& target);

// Why txbox refuses to publish `message` to `target`, or nullopt when it may
// be sent. Refused (a permanent failure, nothing is sent):
// - an exchange whose name starts with "amq.": RabbitMQ's own exchanges
//   (amq.direct, amq.topic, amq.rabbitmq.trace, ...); the default exchange
//   (a destination without '/') stays allowed;
// - names AMQP cannot carry: exchange, routing key, header names, the
//   content-type header or the message id longer than 255 bytes;
// - properties (headers and all) that do not fit in one frame of
//   `frame_max` bytes. rabbitmq-c would fail such a message half-way
//   through sending it, which breaks the connection for everyone.
std::optional<std::string> refuse_reason(const brokers::Message& message, const Target& target,
                                         std::size_t frame_max);

// Bytes the content header frame of `message` takes on the wire (properties
// as the publisher sends them: delivery mode, message id, content type,
// headers plus message-id and message-key).
std::size_t header_frame_size(const brokers::Message& message);

// The header names of the one wire format (txbox/brokers/wire.hpp).
inline constexpr std::string_view kMessageIdHeader = brokers::wire::kMessageId;
inline constexpr std::string_view kMessageKeyHeader = brokers::wire::kMessageKey;
inline constexpr std::string_view kContentTypeHeader = brokers::wire::kContentType;

}  // namespace txbox::rabbitmq::detail
