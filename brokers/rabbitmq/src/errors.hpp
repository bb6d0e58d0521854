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
  library,            // rabbitmq-c status on an open connection (code = amqp_status_enum):
                      // socket error, connection closed, heartbeat / RPC timeout, encoding
  unreachable,        // no connection could be made (code = amqp_status_enum of the last try,
                      // or the reply code the broker closed the login with)
  channel_closed,     // channel.close from the broker (code = AMQP reply code)
  connection_closed,  // connection.close from the broker (code = AMQP reply code)
  blocked,            // connection.blocked: a memory or disk alarm on the broker
  nack,               // basic.nack of a published message
  returned,           // basic.return of a mandatory message (code = reply code, 312 NO_ROUTE)
  timeout,            // no confirm before the deadline on a connection that is fine
  refused,            // txbox refused to send the message (reserved exchange, too-long names)
};

// A failure: cause, code and the broker's / library's text.
struct Failure {
  Cause cause = Cause::library;
  int code = 0;
  std::string text;
};

// THE classification.
// - outage (the broker as a whole is unavailable; no attempt is counted):
//   unreachable, a lost connection (socket error, heartbeat or RPC timeout),
//   connection.blocked, connection.close other than a protocol error
//   (320 CONNECTION_FORCED, 541 INTERNAL_ERROR, ...);
// - permanent (the same message can never succeed): returned (unroutable),
//   refused by txbox, a channel closed with 403 ACCESS_REFUSED, 404 NOT_FOUND
//   (missing exchange), 311 / 501 (too large), 406 "larger than max size",
//   headers that do not fit in a frame (AMQP_STATUS_TABLE_TOO_BIG);
// - transient (retry this message later): nack, confirm timeout, any other
//   channel error (405 RESOURCE_LOCKED, 406 other preconditions, ...), a
//   connection closed for a protocol error (501..505).
brokers::ErrorClass classify(const Failure& failure) noexcept;

// Failure of an RPC reply (amqp_login, amqp_get_rpc_reply, amqp_read_message...).
// `what` names the operation. Sends nothing.
Failure failure_of(const amqp_rpc_reply_t& reply, std::string_view what);

// The failure's text with the AMQP reply name and code where there is one,
// and what to do next / whether it will be retried.
std::string describe(const Failure& failure);

std::string to_string(amqp_bytes_t bytes);
// Non-owning view of a string as amqp_bytes_t (valid while `s` lives).
amqp_bytes_t as_bytes(const std::string& s) noexcept;
// A UTF-8 string entry of an AMQP table (headers, arguments, client
// properties); non-owning like as_bytes().
amqp_table_entry_t utf8_entry(amqp_bytes_t key, amqp_bytes_t value) noexcept;

}  // namespace txbox::rabbitmq::detail
