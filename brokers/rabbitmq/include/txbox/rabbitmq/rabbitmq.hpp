#pragma once
// RabbitMQ (AMQP 0-9-1) adapter for txbox, built on rabbitmq-c. The public
// API exposes only the broker-neutral interface; rabbitmq-c handles stay
// inside the library.
//
// URL: amqp://user:password@host[:port][,host[:port]...][/vhost][?options]
//   port defaults to 5672; an empty path means the vhost "/"; other vhosts
//   are percent-encoded ("/%2F" is "/", "/orders" is "orders"). With several
//   hosts, connecting tries them in order.
//
// Destination of a published message:
//   "exchange/routing-key"  -> that exchange, that routing key (the key may
//                              itself contain '/': only the first one splits)
//   "queue-name"            -> the default exchange "" with routing key
//                              "queue-name", i.e. straight into that queue.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "txbox/brokers/broker.hpp"
#include "txbox/brokers/url.hpp"

namespace txbox::rabbitmq {

// Publisher with asynchronous publisher confirms. start() takes a pooled
// connection (one confirm-mode channel; created lazily, one per batch in
// flight) and publishes the batch on it: persistent, mandatory, message_id
// property = message id, headers as an AMQP table plus `message-id` and,
// for keyed messages, `message-key`; content_type from a `content-type`
// header. The PendingPublish owns the connection until wait() has read the
// basic.ack / basic.nack / basic.return of every message or the deadline
// passed; a connection with confirms outstanding is closed, not reused.
// - A basic.return (no queue bound) is a permanent failure, a nack a
//   transient one; exchanges named `amq.*` are refused (permanent) unsent.
// - When the broker closes the channel because of one message (too large,
//   access refused, exchange deleted), the unconfirmed messages are
//   re-published one at a time on a new channel until the one that closes
//   it on its own is found: only that one fails (with the broker's reason).
// - A lost or unreachable connection, and connection.blocked (a memory or
//   disk alarm), fail the rest of the batch with ErrorClass::outage;
//   healthy() is false meanwhile. probe() publishes an empty message that
//   RabbitMQ drops and waits for its confirm.
// Recognised URL query parameters: connect_timeout_ms (default 5000),
// heartbeat (seconds, default 0 = off), send_timeout_ms (default 30000: a
// send stalled that long, the broker not reading, drops the connection).
// Throws txbox::UsageError naming what is wrong with the URL, and
// brokers::BrokerError (not retryable) when the broker refuses the login.
std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties = {});

struct ConsumerOptions {
  std::string queue{};
  // basic.qos: unacked messages in flight to this consumer. Three batches of
  // the inbox consumer's default max_batch (100): with only one, the broker
  // waits for a batch's acks before it sends the next (txbox-bench consumer,
  // no-op handler: 7,900 msg/s with 100, 19,000 with 300, 18,700 with 1000).
  uint16_t prefetch = 300;
  // Topology declared when `declare` is true:
  std::string exchange{};                   // empty: no exchange, no bindings
  std::string exchange_type = "direct";     // direct|topic|fanout|headers
  std::vector<std::string> binding_keys{};  // empty with an exchange: binds with the queue name
  std::string dead_letter_exchange{};       // default "<queue>.dlx" (fanout)
  std::string dead_letter_queue{};          // default "<queue>.dlq"
  bool declare = true;
};

// Consumer of one queue with manual acks. With `declare`, declares (idempotently):
// the dead-letter exchange (fanout, durable) and queue bound to it; the queue
// (durable, x-dead-letter-exchange = the DLX); and, when `exchange` is set,
// that exchange (durable) with the queue bound to it for every binding key.
// poll() reconnects by itself after a connection loss (the broker then
// redelivers unacked messages, delivery_attempt 2). dead_letter() publishes a
// copy with the dead-letter headers of docs/wire-format.md to the dead-letter
// exchange (confirmed, on a connection of its own), then acks the original;
// when that exchange refuses it for good, it rejects the original without
// requeue instead (the queue's own dead-lettering, x-death only).
// Throws txbox::UsageError for a bad URL or empty queue, and
// brokers::BrokerError (not retryable) when the broker refuses the login or
// the declared topology conflicts with an existing one.
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const ConsumerOptions& options);

// What brokers::open_consumer() calls: ConsumerOptions from the subscription.
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription);

}  // namespace txbox::rabbitmq
