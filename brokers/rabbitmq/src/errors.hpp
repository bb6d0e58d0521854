#pragma once
// Private to the RabbitMQ adapter (and its tests): how AMQP / rabbitmq-c
// failures map onto the broker-neutral ErrorClass.

#include <amqp.h>

#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::rabbitmq::detail {

// Where a failure was seen.
enum class Cause {
  library,           // rabbitmq-c status (code = amqp_status_enum): socket, timeout, encoding
  channel_closed,    // channel.close from the broker (code = AMQP reply code)
  connection_closed, // connection.close from the broker (code = AMQP reply code)
  nack,              // basic.nack of a published message
  returned,          // basic.return of a mandatory message (code = reply code, 312 NO_ROUTE)
  timeout,           // no confirm within the publish timeout
};

// A failure: cause, code and the broker's / library's text.
struct Failure {
  Cause cause = Cause::library;
  int code = 0;
  std::string text;
};

// THE classification. Permanent = the same message can never succeed:
// NOT_FOUND (404, missing exchange), ACCESS_REFUSED (403), an unroutable
// (returned) message, a frame / message too large (501, 406 "max size",
// AMQP_STATUS_TABLE_TOO_BIG). Everything else is transient: socket errors,
// connection forced/closed (320), timeouts, RESOURCE_LOCKED (405), nacks.
brokers::ErrorClass classify(const Failure& failure) noexcept;

// Failure of an RPC reply (amqp_login, amqp_get_rpc_reply, amqp_read_message...).
// `what` names the operation. Sends nothing.
Failure failure_of(const amqp_rpc_reply_t& reply, std::string_view what);

// "NOT_FOUND (404): no exchange 'x' in vhost '/'"-style text with a hint
// on what to do next.
std::string describe(const Failure& failure);

std::string to_string(amqp_bytes_t bytes);
// Non-owning view of a string as amqp_bytes_t (valid while `s` lives).
amqp_bytes_t as_bytes(const std::string& s) noexcept;

}  // namespace txbox::rabbitmq::detail
