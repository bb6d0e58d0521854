// The NATS JetStream adapter against a real nats-server (TXBOX_TEST_NATS_URL):
// publish confirmations, Nats-Msg-Id deduplication, missing streams, the
// durable pull consumer (ack, AckWait redelivery, MaxDeliver, dead letters)
// and the error classification.
#include <catch2/catch.hpp>
#include <chrono>
#include <atomic>
#include <map>
#include <thread>

#include "errors.hpp"
#include "nats_support.hpp"
#include "support/test_env.hpp"

namespace test = txbox::test;
using txbox::brokers::Delivery;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<txbox::brokers::Publisher> publisher(const std::string& query = {}) {
  return txbox::nats::make_publisher(test::nats_broker_url(test::nats_url() + query));
}

std::unique_ptr<txbox::brokers::Consumer> consumer(const std::string& subject,
                                                   std::chrono::milliseconds ack_wait = 30s,
                                                   int max_deliver = 10, int batch = 100) {
  txbox::nats::ConsumerOptions options;
  options.subject = subject;
  options.durable = test::unique_name("durable");
  options.ack_wait = ack_wait;
  options.max_deliver = max_deliver;
  options.batch = batch;
  return txbox::nats::make_consumer(test::nats_broker_url(test::nats_url()), options);
}

std::vector<Message> messages(const std::string& subject, int n, const std::string& tag = "m") {
  std::vector<Message> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({test::unique_name("id"), subject, "key-" + std::to_string(i % 10),
                   tag + "-" + std::to_string(i), {{"content-type", "text/plain"}, {"seq", std::to_string(i)}}});
  }
  return out;
}

std::optional<Delivery> poll_for(txbox::brokers::Consumer& c, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto d = c.poll(200ms)) return d;
  }
  return std::nullopt;
}

std::string header_value(const Delivery& d, const std::string& name) {
  for (const auto& [k, v] : d.message.headers)
    if (k == name) return v;
  return "<missing>";
}

}  // namespace

TEST_CASE("a batch of 1000 is confirmed and consumed back with id, key, payload and headers", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("batch");
  admin.add_stream(test::nats_stream_name(subject), {subject});
  auto pub = publisher();
  CHECK(pub->healthy());
  auto batch = messages(subject, 1000);
  batch[3].key.reset();  // one message without key

  const auto started = std::chrono::steady_clock::now();
  auto results = pub->publish(batch, 30s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  WARN("published 1000 messages in " << seconds * 1000 << " ms (" << 1000 / seconds << " msg/s)");
  REQUIRE(results.size() == 1000);
  for (const auto& r : results) REQUIRE(r.confirmed);
  CHECK(admin.message_count(test::nats_stream_name(subject)) == 1000);

  auto c = consumer(subject, 30s, 10, 250);
  for (int i = 0; i < 1000; ++i) {
    auto d = poll_for(*c, 10s);
    REQUIRE(d);
    const Message& expected = batch[static_cast<size_t>(i)];
    CHECK(d->message.message_id == expected.message_id);
    CHECK(d->message.key == expected.key);
    CHECK(d->message.payload == expected.payload);
    CHECK(d->source == subject);
    CHECK(d->offset == i + 1);
    CHECK(d->delivery_attempt == 1);
    CHECK(header_value(*d, "content-type") == "text/plain");
    CHECK(header_value(*d, "seq") == std::to_string(i));
    c->ack(*d);
  }
  CHECK_FALSE(c->poll(300ms));
  c->close();
}

TEST_CASE("re-publishing the same message ids inside the duplicate window adds nothing", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("dedup");
  const auto stream = test::nats_stream_name(subject);
  admin.add_stream(stream, {subject});
  auto pub = publisher();
  auto batch = messages(subject, 200);
  for (const auto& r : pub->publish(batch, 30s)) REQUIRE(r.confirmed);
  CHECK(admin.message_count(stream) == 200);
  // Same ids again (what a relay does after a lost PubAck): confirmed, not stored.
  for (const auto& r : pub->publish(batch, 30s)) REQUIRE(r.confirmed);
  CHECK(admin.message_count(stream) == 200);
  // New ids are stored.
  for (const auto& r : pub->publish(messages(subject, 5), 30s)) REQUIRE(r.confirmed);
  CHECK(admin.message_count(stream) == 205);
}

TEST_CASE("a subject without a stream is a permanent error that says how to create one", "[nats]") {
  auto pub = publisher();
  const auto subject = test::nats_subject("nostream");
  auto results = pub->publish(messages(subject, 3), 10s);
  REQUIRE(results.size() == 3);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::permanent);
    CHECK_THAT(r.error, Catch::Contains("nats stream add") && Catch::Contains("--subjects '" + subject + "'") &&
                            Catch::Contains("create_streams=true"));
  }
}

TEST_CASE("invalid subjects are permanent errors, the rest of the batch goes through", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("mixed");
  admin.add_stream(test::nats_stream_name(subject), {subject});
  auto pub = publisher();
  auto batch = messages(subject, 3);
  batch[1].destination = "bad subject";
  auto results = pub->publish(batch, 10s);
  CHECK(results[0].confirmed);
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == ErrorClass::permanent);
  CHECK_THAT(results[1].error, Catch::Contains("not a valid NATS subject"));
  CHECK(results[2].confirmed);
}

TEST_CASE("create_streams=true creates a stream for a new subject", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("created");
  const auto stream = test::nats_stream_name(subject);
  auto pub = publisher("?create_streams=true&duplicate_window=1m");
  for (const auto& r : pub->publish(messages(subject, 10), 30s)) REQUIRE(r.confirmed);
  CHECK(admin.message_count(stream) == 10);
  admin.delete_stream(stream);
}

TEST_CASE("concurrent publish calls each get their own results", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto good = test::nats_subject("conc");
  admin.add_stream(test::nats_stream_name(good), {good});
  const auto missing = test::nats_subject("concmissing");
  auto pub = publisher();
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        const bool ok = (t + round) % 2 == 0;
        auto results = pub->publish(messages(ok ? good : missing, 300), 30s);
        for (const auto& r : results)
          if (r.confirmed != ok) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(admin.message_count(test::nats_stream_name(good)) == 3 * 5 * 300);
}

TEST_CASE("a publisher without a reachable server is unhealthy and fails transiently by its timeout", "[nats]") {
  auto pub = txbox::nats::make_publisher(test::nats_broker_url("nats://127.0.0.1:1"));
  CHECK_FALSE(pub->healthy());
  auto started = std::chrono::steady_clock::now();
  auto results = pub->publish(messages("nowhere.events", 3), 2s);
  CHECK(std::chrono::steady_clock::now() - started < 3s);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::transient);
  }
}

TEST_CASE("bad URLs and options are rejected with the problem named", "[nats]") {
  using txbox::nats::make_publisher;
  CHECK_THROWS_WITH(make_publisher(test::nats_broker_url("nats://127.0.0.1:4222?bogus=1")),
                    Catch::Contains("unknown NATS broker URL option 'bogus'"));
  CHECK_THROWS_WITH(make_publisher(test::nats_broker_url("nats://127.0.0.1:4222?duplicate_window=abc")),
                    Catch::Contains("duplicate_window=abc"));
  CHECK_THROWS_WITH(make_publisher(test::nats_broker_url("nats://127.0.0.1:4222/path")),
                    Catch::Contains("has a path"));
  txbox::nats::ConsumerOptions options;
  CHECK_THROWS_WITH(txbox::nats::make_consumer(test::nats_broker_url(test::nats_url()), options),
                    Catch::Contains("subject is empty"));
}

TEST_CASE("unacked messages are redelivered after AckWait with delivery_attempt 2, up to MaxDeliver", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("redeliver");
  admin.add_stream(test::nats_stream_name(subject), {subject});
  auto pub = publisher();
  auto batch = messages(subject, 2);
  for (const auto& r : pub->publish(batch, 10s)) REQUIRE(r.confirmed);

  auto c = consumer(subject, 1s, /*max_deliver=*/2);
  auto first = poll_for(*c, 5s);
  REQUIRE(first);
  CHECK(first->delivery_attempt == 1);
  c->ack(*first);
  auto second = poll_for(*c, 5s);
  REQUIRE(second);
  CHECK(second->message.message_id == batch[1].message_id);
  CHECK(second->delivery_attempt == 1);
  // Not acked: back after AckWait as attempt 2.
  auto again = poll_for(*c, 5s);
  REQUIRE(again);
  CHECK(again->message.message_id == batch[1].message_id);
  CHECK(again->delivery_attempt == 2);
  CHECK(again->offset == second->offset);
  // MaxDeliver = 2: never again.
  CHECK_FALSE(poll_for(*c, 2500ms));
  // Acking the first message twice is reported.
  CHECK_THROWS_AS(c->ack(*first), txbox::brokers::BrokerError);
}

TEST_CASE("an acked message is not redelivered, also not to a new consumer instance", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("acked");
  admin.add_stream(test::nats_stream_name(subject), {subject});
  auto pub = publisher();
  for (const auto& r : pub->publish(messages(subject, 3), 10s)) REQUIRE(r.confirmed);
  txbox::nats::ConsumerOptions options;
  options.subject = subject;
  options.durable = test::unique_name("durable");
  options.ack_wait = 1s;
  {
    auto c = txbox::nats::make_consumer(test::nats_broker_url(test::nats_url()), options);
    auto d = poll_for(*c, 5s);
    REQUIRE(d);
    c->ack(*d);
    c->close();
  }
  auto c = txbox::nats::make_consumer(test::nats_broker_url(test::nats_url()), options);
  std::vector<int64_t> offsets;
  while (auto d = poll_for(*c, 2500ms)) {
    offsets.push_back(d->offset);
    c->ack(*d);
  }
  CHECK(offsets == std::vector<int64_t>{2, 3});
}

TEST_CASE("dead_letter() publishes to the dead-letter subject and the message is not redelivered", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("dlq");
  admin.add_stream(test::nats_stream_name(subject), {subject});
  admin.add_stream(test::nats_stream_name(subject) + "_dlq", {subject + ".dlq"});
  auto pub = publisher();
  auto batch = messages(subject, 1);
  for (const auto& r : pub->publish(batch, 10s)) REQUIRE(r.confirmed);

  auto c = consumer(subject, 1s, 5);
  auto d = poll_for(*c, 5s);
  REQUIRE(d);
  CHECK(c->dead_letter(*d, "handler failed:\nbad payload"));
  CHECK_FALSE(poll_for(*c, 2500ms));  // terminated: no redelivery after AckWait
  CHECK(admin.message_count(test::nats_stream_name(subject) + "_dlq") == 1);

  auto dlq = consumer(subject + ".dlq");
  auto dead = poll_for(*dlq, 5s);
  REQUIRE(dead);
  CHECK(dead->message.message_id == batch[0].message_id);
  CHECK(dead->message.key == batch[0].key);
  CHECK(dead->message.payload == batch[0].payload);
  CHECK(header_value(*dead, "dlq-error") == "handler failed: bad payload");
  CHECK(header_value(*dead, "dlq-original-subject") == subject);
  CHECK(header_value(*dead, "dlq-timestamp") != "<missing>");
  CHECK(header_value(*dead, "content-type") == "text/plain");
  dlq->ack(*dead);
}

TEST_CASE("dead_letter() without a dead-letter stream falls back to core NATS and still terminates", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("dlqcore");
  admin.add_stream(test::nats_stream_name(subject), {subject});
  auto pub = publisher();
  for (const auto& r : pub->publish(messages(subject, 1), 10s)) REQUIRE(r.confirmed);
  auto c = consumer(subject, 1s, 5);
  auto d = poll_for(*c, 5s);
  REQUIRE(d);
  CHECK(c->dead_letter(*d, "gave up"));
  CHECK_FALSE(poll_for(*c, 2500ms));
}

TEST_CASE("publish errors are classified once, with what to do next", "[nats][unit]") {
  using txbox::nats::detail::classify;
  using txbox::nats::detail::describe;
  using txbox::nats::detail::PublishError;
  auto err = [](natsStatus s, int code = 0, bool js = true, bool creates = false) {
    return PublishError{s, static_cast<jsErrCode>(code), "", js, creates};
  };
  CHECK(classify(err(NATS_TIMEOUT)) == ErrorClass::transient);
  CHECK(classify(err(NATS_CONNECTION_CLOSED)) == ErrorClass::transient);
  CHECK(classify(err(NATS_NO_SERVER)) == ErrorClass::transient);
  CHECK(classify(err(NATS_CONNECTION_DISCONNECTED)) == ErrorClass::transient);
  CHECK(classify(err(NATS_NO_RESPONDERS)) == ErrorClass::permanent);
  CHECK(classify(err(NATS_NO_RESPONDERS, 0, /*js=*/false)) == ErrorClass::transient);
  CHECK(classify(err(NATS_NO_RESPONDERS, 0, true, /*creates=*/true)) == ErrorClass::transient);
  CHECK(classify(err(NATS_MAX_PAYLOAD)) == ErrorClass::permanent);
  CHECK(classify(err(NATS_INVALID_SUBJECT)) == ErrorClass::permanent);
  CHECK(classify(err(NATS_ERR, JSStreamNotFoundErr)) == ErrorClass::permanent);
  CHECK(classify(err(NATS_ERR, JSStreamMessageExceedsMaximumErr)) == ErrorClass::permanent);
  CHECK(classify(err(NATS_ERR, JSStreamStoreFailedErr)) == ErrorClass::transient);
  CHECK(classify(err(NATS_ERR, JSInsufficientResourcesErr)) == ErrorClass::transient);
  CHECK_THAT(describe(err(NATS_MAX_PAYLOAD), "a.b", 2000000, 1s), Catch::Contains("max_payload"));
  CHECK_THAT(describe(err(NATS_TIMEOUT), "a.b", 10, 1500ms), Catch::Contains("1500 ms"));
  CHECK(txbox::nats::detail::invalid_subject_reason("orders.created").empty());
  CHECK_FALSE(txbox::nats::detail::invalid_subject_reason("orders..created").empty());
  CHECK_FALSE(txbox::nats::detail::invalid_subject_reason("orders.*").empty());
  CHECK_FALSE(txbox::nats::detail::invalid_subject_reason("").empty());
}
