// The NATS JetStream adapter against a real nats-server (TXBOX_TEST_NATS_URL):
// publish confirmations, batches in flight at once and abandoned ones,
// Nats-Msg-Id deduplication, missing streams, '$' subjects and replies that
// are not PubAcks, probe(), and the durable pull consumer (ack, AckWait
// redelivery, MaxDeliver, dead letters). The pure logic is in
// nats_unit_test.cpp.
#include <catch2/catch.hpp>
#include <chrono>
#include <atomic>
#include <map>
#include <thread>

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
  const auto subject = admin.add_subject_with_stream("batch");
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
  const auto subject = test::JetStreamAdmin(test::nats_url()).add_subject_with_stream("mixed");
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

TEST_CASE("a publisher without a reachable server is unhealthy, fails at once with class outage, probe() is false",
          "[nats]") {
  auto pub = txbox::nats::make_publisher(test::nats_broker_url("nats://user:secret@127.0.0.1:1"));
  CHECK_FALSE(pub->healthy());
  auto started = std::chrono::steady_clock::now();
  auto results = pub->publish(messages("nowhere.events", 3), 30s);
  // Not the 30 s deadline: nothing is buffered, so there is nothing to wait for.
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::outage);
    CHECK_THAT(r.error, Catch::Contains("will be retried") && !Catch::Contains("secret"));
  }
  started = std::chrono::steady_clock::now();
  CHECK_FALSE(pub->probe(1s));
  CHECK(std::chrono::steady_clock::now() - started < 5s);
}

TEST_CASE("probe() is a JetStream round trip that answers true on a live server", "[nats]") {
  auto pub = publisher();
  CHECK(pub->probe(5s));
  CHECK(pub->probe(5s));  // repeatable
}

TEST_CASE("two batches in flight from one thread on one publisher each get their own results", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto good = test::nats_subject("inflight");
  const auto stream = test::nats_stream_name(good);
  admin.add_stream(stream, {good});
  const auto missing = test::nats_subject("inflightmissing");
  auto pub = publisher();

  SECTION("one batch confirmed, the other refused") {
    auto first = messages(good, 300, "first");
    auto second = messages(missing, 200, "second");
    auto pending_first = pub->start(first);
    auto pending_second = pub->start(second);
    // Collected in the other order than started.
    auto second_results = pending_second->wait(std::chrono::steady_clock::now() + 30s);
    auto first_results = pending_first->wait(std::chrono::steady_clock::now() + 30s);
    REQUIRE(first_results.size() == 300);
    REQUIRE(second_results.size() == 200);
    for (const auto& r : first_results) CHECK(r.confirmed);
    for (const auto& r : second_results) {
      CHECK_FALSE(r.confirmed);
      CHECK(r.error_class == ErrorClass::permanent);
    }
    CHECK(admin.message_count(stream) == 300);
  }
  SECTION("both confirmed, stored in the order they were started") {
    auto first = messages(good, 250, "first");
    auto second = messages(good, 250, "second");
    auto pending_first = pub->start(first);
    auto pending_second = pub->start(second);
    for (const auto& r : pending_second->wait(std::chrono::steady_clock::now() + 30s)) CHECK(r.confirmed);
    for (const auto& r : pending_first->wait(std::chrono::steady_clock::now() + 30s)) CHECK(r.confirmed);
    auto stored = admin.read_stream(stream, good);
    REQUIRE(stored.size() == 500);
    for (size_t i = 0; i < 250; ++i) CHECK(stored[i].message_id == first[i].message_id);
    for (size_t i = 0; i < 250; ++i) CHECK(stored[250 + i].message_id == second[i].message_id);
  }
}

TEST_CASE("an abandoned PendingPublish is safe: its late PubAcks never reach a later batch", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto good = test::nats_subject("abandon");
  const auto stream = test::nats_stream_name(good);
  admin.add_stream(stream, {good});
  const auto missing = test::nats_subject("abandonmissing");
  auto pub = publisher();
  int abandoned = 0;
  for (int round = 0; round < 10; ++round) {
    auto batch = messages(good, 300, "abandoned");
    { auto pending = pub->start(batch); }  // destroyed at once: its PubAcks are still coming
    abandoned += 300;
    // The lane just given back is the one this batch gets (the pool is LIFO):
    // a late PubAck of the abandoned batch would show up here as a confirmation.
    auto refused = messages(missing, 300, "refused");
    for (const auto& r : pub->publish(refused, 30s)) {
      CHECK_FALSE(r.confirmed);
      CHECK(r.error_class == ErrorClass::permanent);
    }
  }
  // The publisher goes on working normally.
  auto last = messages(good, 100, "after");
  for (const auto& r : pub->publish(last, 30s)) CHECK(r.confirmed);
  // Abandoned batches were sent (abandoning does not unsend): they are stored too.
  CHECK(admin.message_count(stream) <= abandoned + 100);
  CHECK(admin.message_count(stream) >= 100);
}

TEST_CASE("a PendingPublish may outlive its publisher", "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = admin.add_subject_with_stream("outlive");
  auto batch = messages(subject, 200);
  auto pub = publisher();
  auto pending = pub->start(batch);
  pub.reset();
  auto results = pending->wait(std::chrono::steady_clock::now() + 30s);
  REQUIRE(results.size() == 200);
  for (const auto& r : results) CHECK(r.confirmed);
  pending.reset();  // the last owner closes the connection
  CHECK(admin.message_count(test::nats_stream_name(subject)) == 200);
}

TEST_CASE("a '$JS.API.STREAM.DELETE.<stream>' destination fails permanently and the stream keeps its messages",
          "[nats]") {
  test::JetStreamAdmin admin(test::nats_url());
  const auto subject = test::nats_subject("apiguard");
  const auto stream = test::nats_stream_name(subject);
  admin.add_stream(stream, {subject});
  auto pub = publisher();
  for (const auto& r : pub->publish(messages(subject, 5), 10s)) REQUIRE(r.confirmed);

  auto batch = messages(subject, 5, "mixed");
  batch[1].destination = "$JS.API.STREAM.DELETE." + stream;
  batch[2].destination = "$JS.API.STREAM.PURGE." + stream;
  batch[3].destination = "$KV.config.key";
  auto results = pub->publish(batch, 10s);
  CHECK(results[0].confirmed);
  for (int i : {1, 2, 3}) {
    INFO(batch[static_cast<size_t>(i)].destination);
    CHECK_FALSE(results[static_cast<size_t>(i)].confirmed);
    CHECK(results[static_cast<size_t>(i)].error_class == ErrorClass::permanent);
    CHECK_THAT(results[static_cast<size_t>(i)].error,
               Catch::Contains("starts with '$'") && Catch::Contains("retrying cannot help"));
  }
  CHECK(results[4].confirmed);  // the rest of the batch goes on
  CHECK(admin.message_count(stream) == 7);  // still there, nothing deleted or purged
}

TEST_CASE("a fresh publisher whose first batch sends nothing (every subject refused) settles it", "[nats]") {
  // cnats 3.4.1 crashed when asked for the pending messages of a JetStream
  // context that never published: a batch of refused subjects did that.
  auto pub = publisher();
  auto batch = messages("unused", 3, "refused");
  for (auto& m : batch) m.destination = "$JS.API.INFO";
  for (int round = 0; round < 2; ++round)
    for (const auto& r : pub->publish(batch, 5s)) {
      CHECK_FALSE(r.confirmed);
      CHECK(r.error_class == ErrorClass::permanent);
    }
}

TEST_CASE("a subject answered by something that is not a JetStream stream fails permanently", "[nats]") {
  const auto subject = test::nats_subject("responder");
  std::string reply;
  SECTION("'+OK' from a core NATS responder") { reply = "+OK"; }
  SECTION("an empty JSON object") { reply = "{}"; }
  SECTION("an answer of the JetStream API itself") {
    reply = R"({"type":"io.nats.jetstream.api.v1.stream_delete_response","success":true})";
  }
  SECTION("an empty reply") { reply = ""; }
  INFO("reply: " << reply);
  test::CoreResponder responder(test::nats_url(), subject, reply);
  auto pub = publisher();
  auto results = pub->publish(messages(subject, 3), 10s);
  CHECK(responder.answered() == 3);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::permanent);
    CHECK_THAT(r.error, Catch::Contains("answered by something that is not a JetStream stream") &&
                            Catch::Contains("'" + subject + "'"));
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
  const auto subject = test::JetStreamAdmin(test::nats_url()).add_subject_with_stream("redeliver");
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
  const auto subject = test::JetStreamAdmin(test::nats_url()).add_subject_with_stream("acked");
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
  const auto subject = admin.add_subject_with_stream("dlq");
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
  CHECK(header_value(*dead, "dlq-error-class") == "handler");
  CHECK(header_value(*dead, "dlq-attempts") == "1");
  CHECK(header_value(*dead, "dlq-original-destination") == subject);
  CHECK(header_value(*dead, "dlq-original-position") == std::to_string(d->offset));  // stream sequence
  CHECK_THAT(header_value(*dead, "dlq-timestamp"), Catch::Matchers::EndsWith("Z"));
  CHECK(header_value(*dead, "content-type") == "text/plain");
  dlq->ack(*dead);
}

TEST_CASE("dead_letter() without a dead-letter stream falls back to core NATS and still terminates", "[nats]") {
  const auto subject = test::JetStreamAdmin(test::nats_url()).add_subject_with_stream("dlqcore");
  auto pub = publisher();
  for (const auto& r : pub->publish(messages(subject, 1), 10s)) REQUIRE(r.confirmed);
  auto c = consumer(subject, 1s, 5);
  auto d = poll_for(*c, 5s);
  REQUIRE(d);
  CHECK(c->dead_letter(*d, "gave up"));
  CHECK_FALSE(poll_for(*c, 2500ms));
}
