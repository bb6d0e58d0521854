#pragma once
// NATS JetStream adapter for txbox, built on cnats. The public API exposes
// only the broker-neutral interface; cnats handles stay inside the library.

#include <chrono>
#include <memory>
#include <string>

#include "txbox/brokers/broker.hpp"
#include "txbox/brokers/url.hpp"

namespace txbox::nats {

// JetStream publisher for nats://[user:pass@]host:port[,host:port] (default
// port 4222). Destination = subject; a JetStream stream must cover it.
// Query options:
//   create_streams=true     create a stream for a subject no stream covers:
//                           name = subject with '.', '*', '>' and other
//                           characters outside [A-Za-z0-9_-] replaced by '_',
//                           subjects=[subject], file storage, duplicate window
//                           `duplicate_window`.
//   duplicate_window=2m     duplicate window of created streams (ms, s, m, h).
//   name=...                connection name shown by the server.
// Every message carries Nats-Msg-Id = message id (JetStream drops a
// re-publish within the stream's duplicate window), its headers as NATS
// headers plus `message-id` and, when it has a key, `message-key`. A message
// is confirmed only by a PubAck that names a stream (a duplicate PubAck
// counts as confirmed); any other reply is a permanent failure. Subjects
// starting with '$' ($JS.API..., $KV..., $SYS...) fail permanently without
// being sent.
// start() takes a JetStream context of its own from a pool for the batch, so
// concurrent batches never see each other's acks; the PendingPublish gives it
// back. The connection reconnects forever (every 500 ms) and buffers nothing
// while reconnecting: a publish then fails at once with class `outage`, and
// after the first such failure the rest of the batch is not sent (per-key
// order). healthy() is false while disconnected; probe() asks the JetStream
// API for the account info.
// Throws txbox::UsageError naming the problem for a bad URL or option.
std::unique_ptr<brokers::Publisher> make_publisher(const brokers::BrokerUrl& url,
                                                   const brokers::Properties& properties = {});

struct ConsumerOptions {
  std::string stream{};   // stream to bind to; empty = the stream that covers `subject`
  std::string subject{};  // filter subject (required)
  std::string durable{};  // durable consumer name; empty = "txbox-" + subject with '.' -> '_'
  int batch = 100;        // messages fetched per pull request
  std::chrono::milliseconds ack_wait{30000};  // unacked messages are redelivered after it
  int max_deliver = 10;                       // deliveries before the server gives up
  std::string dead_letter_subject{};          // default "<subject>.dlq"
};

// Durable pull consumer (explicit acks). poll() returns one message at a
// time: message id from Nats-Msg-Id (or the message-id header), key from the
// message-key header, source = subject, offset = stream sequence,
// delivery_attempt = the server's delivery count. ack() waits for the
// server's confirmation. dead_letter() publishes the message with the
// dead-letter headers of docs/wire-format.md (dlq-error, dlq-error-class,
// dlq-attempts, dlq-original-destination = subject, dlq-original-position =
// stream sequence, dlq-timestamp) to the dead-letter subject (through
// JetStream when a stream covers it, else core NATS with a warning), then
// terminates it (no redelivery).
// Throws txbox::UsageError for bad options, brokers::BrokerError when the
// server cannot be reached or the consumer cannot be created.
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const ConsumerOptions& options);

// What brokers::open_consumer() calls: ConsumerOptions from the subscription.
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription);

}  // namespace txbox::nats
