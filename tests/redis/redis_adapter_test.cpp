// Redis Streams adapter against TXBOX_TEST_REDIS_URL: pipelined idempotent
// publishing, batches in flight and abandoned, refused destinations, probe(),
// error classification, consumer group ack, XAUTOCLAIM takeover, dead-letter
// stream.
#include <fmt/format.h>

#include <thread>

#include "redis_client.hpp"

namespace test = txbox::test;
namespace rt = txbox::test::redis;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;
using namespace std::chrono_literals;

namespace {
std::vector<Message> make_messages(const std::string& stream, int n, const std::string& tag = "m") {
  std::vector<Message> messages;
  for (int i = 0; i < n; ++i)
    messages.push_back({test::unique_name(tag), stream, i % 7 == 0 ? std::nullopt : std::optional<std::string>(fmt::format("key-{}", i % 10)),
                        fmt::format("payload-{}", i), {{"content-type", "text/plain"}, {"seq", std::to_string(i)}}});
  return messages;
}

void require_confirmed(const std::vector<txbox::brokers::PublishResult>& results) {
  for (const auto& r : results) {
    INFO(r.error);
    REQUIRE(r.confirmed);
  }
}
}  // namespace

TEST_CASE("a batch of 1000 is confirmed in one pipeline and reads back with id, key, payload and headers", "[redis]") {
  auto stream = test::unique_name("batch");
  auto publisher = rt::publisher(test::redis_url());
  auto messages = make_messages(stream, 1000);
  auto start = std::chrono::steady_clock::now();
  auto results = publisher->publish(messages, 30s);
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN(fmt::format("published 1000 messages in {:.1f} ms ({:.0f} msg/s)", elapsed * 1000, 1000 / elapsed));
  REQUIRE(results.size() == 1000);
  require_confirmed(results);
  CHECK(publisher->healthy());

  rt::Client client(test::redis_url());
  auto entries = client.xrange(stream);
  REQUIRE(entries.size() == 1000);
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& f = entries[i].fields;
    CHECK(f.at("message-id") == messages[i].message_id);
    CHECK(f.at("payload") == messages[i].payload);
    if (messages[i].key)
      CHECK(f.at("message-key") == *messages[i].key);
    else
      CHECK(f.count("message-key") == 0);
    CHECK(f.count("key") == 0);  // the field's name before the one wire format
    CHECK(f.at("headers") == fmt::format(R"({{"content-type":"text/plain","seq":"{}"}})", i));
  }

  // Throughput over a bigger set: 10 batches of 1000 from 4 threads.
  std::vector<std::thread> threads;
  std::atomic<int> confirmed{0};
  start = std::chrono::steady_clock::now();
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int b = 0; b < 5; ++b)
        for (const auto& r : publisher->publish(make_messages(stream + "-tp", 1000, fmt::format("t{}", t)), 30s))
          confirmed += r.confirmed;
    });
  for (auto& t : threads) t.join();
  elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN(fmt::format("4 threads: 20000 messages in {:.2f} s ({:.0f} msg/s)", elapsed, 20000 / elapsed));
  CHECK(confirmed == 20000);
  CHECK(client.xlen(stream + "-tp") == 20000);
}

TEST_CASE("publishing the same message ids again adds nothing within the dedup ttl", "[redis]") {
  auto stream = test::unique_name("dedup");
  auto publisher = rt::publisher(test::redis_url() + "?dedup_ttl=2");
  auto messages = make_messages(stream, 100);
  require_confirmed(publisher->publish(messages, 10s));
  rt::Client client(test::redis_url());
  CHECK(client.xlen(stream) == 100);
  require_confirmed(publisher->publish(messages, 10s));  // duplicates count as confirmed
  CHECK(client.xlen(stream) == 100);
  auto ttl = client.integer({"TTL", "txbox:dedup:" + stream + ":" + messages[0].message_id});
  CHECK(ttl > 0);
  CHECK(ttl <= 2);
  // After the window the same id is a new message.
  std::this_thread::sleep_for(2500ms);
  require_confirmed(publisher->publish(std::span(messages).first(10), 10s));
  CHECK(client.xlen(stream) == 110);
}

TEST_CASE("MAXLEN trims the stream approximately", "[redis]") {
  auto stream = test::unique_name("maxlen");
  auto publisher = rt::publisher(test::redis_url() + "?maxlen=100");
  require_confirmed(publisher->publish(make_messages(stream, 2000), 10s));
  rt::Client client(test::redis_url());
  CHECK(client.xlen(stream) < 1000);
  CHECK(client.xlen(stream) >= 100);
}

TEST_CASE("a destination key that is not a stream is a permanent error with a hint and leaves its key's chain",
          "[redis]") {
  auto stream = test::unique_name("wrongtype");
  rt::Client client(test::redis_url());
  client.cmd({"SET", stream, "a string"});
  auto publisher = rt::publisher(test::redis_url());
  auto good = test::unique_name("good");
  std::vector<Message> messages{{test::unique_name("m"), good, std::string("k"), "1", {}},
                                {test::unique_name("m"), stream, std::string("k"), "2", {}},
                                {test::unique_name("m"), good, std::string("k"), "3", {}}};
  auto results = publisher->publish(messages, 10s);
  CHECK(results[0].confirmed);
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == ErrorClass::permanent);
  CHECK_THAT(results[1].error, Catch::Matchers::Contains("holds a value that is not a stream: choose another destination"));
  // The third was refused by the chain at first (its predecessor was not
  // stored); a permanent failure leaves the key's sequence, so the second
  // round sent it again chained to the first.
  CHECK(results[2].confirmed);
  CHECK(publisher->healthy());
  auto entries = client.xrange(good);
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].fields.at("message-id") == messages[0].message_id);
  CHECK(entries[1].fields.at("message-id") == messages[2].message_id);
  // The rejected message was not remembered as published.
  client.cmd({"DEL", stream});
  require_confirmed(publisher->publish(std::span(messages).subspan(1, 1), 10s));
  CHECK(client.xlen(stream) == 1);
}

TEST_CASE("bad URLs are rejected naming the problem, an unreachable server is an outage and unhealthy", "[redis]") {
  using txbox::brokers::parse_broker_url;
  CHECK_THROWS_WITH(rt::publisher("redis://a:1,b:2"), Catch::Matchers::Contains("exactly one host"));
  CHECK_THROWS_WITH(rt::publisher("redis://a/x"), Catch::Matchers::Contains("database number"));
  CHECK_THROWS_WITH(rt::publisher("redis://a?maxlen=-3"), Catch::Matchers::Contains("maxlen"));
  CHECK_THROWS_WITH(rt::publisher("redis://a?foo=1"), Catch::Matchers::Contains("unknown option 'foo'"));
  auto publisher = rt::publisher(fmt::format("redis://127.0.0.1:{}", rt::free_port()));
  auto results = publisher->publish(make_messages("s", 3), 2s);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::outage);
    CHECK_THAT(r.error, Catch::Matchers::Contains("cannot connect to Redis") &&
                            Catch::Matchers::Contains("check that the server runs"));
  }
  CHECK_FALSE(publisher->healthy());
}

std::vector<std::string> ids_of(const std::vector<rt::Entry>& entries) {
  std::vector<std::string> ids;
  for (const auto& e : entries) ids.push_back(e.fields.at("message-id"));
  return ids;
}
std::vector<std::string> ids_of(const std::vector<Message>& messages) {
  std::vector<std::string> ids;
  for (const auto& m : messages) ids.push_back(m.message_id);
  return ids;
}

TEST_CASE("two batches in flight from one thread on one publisher: each gets its own replies", "[redis]") {
  auto stream_a = test::unique_name("inflight_a");
  auto stream_b = test::unique_name("inflight_b");
  auto publisher = rt::publisher(test::redis_url());
  auto a = make_messages(stream_a, 500, "a");
  auto b = make_messages(stream_b, 300, "b");
  auto pending_a = publisher->start(a);
  auto pending_b = publisher->start(b);  // on a second connection: a's replies are not read yet
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  auto results_b = pending_b->wait(deadline);  // the later one first
  auto results_a = pending_a->wait(deadline);
  REQUIRE(results_a.size() == 500);
  REQUIRE(results_b.size() == 300);
  require_confirmed(results_a);
  require_confirmed(results_b);
  rt::Client client(test::redis_url());
  CHECK(ids_of(client.xrange(stream_a)) == ids_of(a));
  CHECK(ids_of(client.xrange(stream_b)) == ids_of(b));
  // Both connections went back to the pool in a usable state.
  for (int i = 0; i < 3; ++i) {
    auto c = make_messages(stream_a, 10, "c");
    auto p1 = publisher->start(c);
    auto p2 = publisher->start(std::span(c).first(5));  // the same ids again: duplicates, confirmed
    require_confirmed(p1->wait(std::chrono::steady_clock::now() + 10s));
    require_confirmed(p2->wait(std::chrono::steady_clock::now() + 10s));
  }
  CHECK(client.xlen(stream_a) == 530);
}

TEST_CASE("a PendingPublish destroyed without wait(): its connection is closed, never reused, the publisher goes on",
          "[redis]") {
  auto wrongtype = test::unique_name("abandon_wrongtype");
  auto stream = test::unique_name("abandon");
  rt::Client client(test::redis_url());
  client.cmd({"SET", wrongtype, "a string"});
  auto publisher = rt::publisher(test::redis_url());
  for (int round = 0; round < 10; ++round) {
    INFO("round " << round);
    // Its first reply is an entry id. Were its connection reused, the next
    // batch would read that reply as the verdict on its own first message.
    std::vector<Message> abandoned{{test::unique_name("gone"), stream, std::string("k"), "x", {}},
                                   {test::unique_name("gone"), stream, std::string("k"), "y", {}}};
    publisher->start(abandoned).reset();
    std::vector<Message> next{{test::unique_name("m"), wrongtype, std::string("k"), "1", {}},
                              {test::unique_name("m"), stream, std::string("j"), "2", {}}};
    auto results = publisher->publish(next, 10s);
    CHECK_FALSE(results[0].confirmed);
    CHECK(results[0].error_class == ErrorClass::permanent);
    CHECK_THAT(results[0].error, Catch::Matchers::Contains("not a stream"));
    CHECK(results[1].confirmed);
    // Abandoned while another batch is in flight on the same publisher.
    auto kept = publisher->start(next);
    publisher->start(abandoned).reset();
    auto kept_results = kept->wait(std::chrono::steady_clock::now() + 10s);
    CHECK(kept_results[0].error_class == ErrorClass::permanent);
    CHECK(kept_results[1].confirmed);
  }
  CHECK(publisher->healthy());
  // A batch in flight may outlive its publisher.
  std::vector<Message> last{{test::unique_name("last"), stream, std::string("k"), "z", {}}};
  auto in_flight = publisher->start(last);
  publisher.reset();
  require_confirmed(in_flight->wait(std::chrono::steady_clock::now() + 10s));
}

TEST_CASE("destinations starting with txbox: and empty ones fail permanently without being sent", "[redis]") {
  auto reserved = "txbox:dedup:" + test::unique_name("x");
  auto good = test::unique_name("good");
  std::vector<Message> messages{{test::unique_name("m"), good, std::string("k"), "1", {}},
                                {test::unique_name("m"), reserved, std::string("k"), "2", {}},
                                {test::unique_name("m"), "", std::string("k"), "3", {}},
                                {test::unique_name("m"), good, std::string("k"), "4", {}}};
  auto publisher = rt::publisher(test::redis_url());
  auto results = publisher->publish(messages, 10s);
  CHECK(results[0].confirmed);
  CHECK_FALSE(results[1].confirmed);
  CHECK(results[1].error_class == ErrorClass::permanent);
  CHECK_THAT(results[1].error, Catch::Matchers::Contains("'" + reserved + "'") &&
                                   Catch::Matchers::Contains("may not start with 'txbox:'"));
  CHECK_FALSE(results[2].confirmed);
  CHECK(results[2].error_class == ErrorClass::permanent);
  CHECK_THAT(results[2].error, Catch::Matchers::Contains("empty"));
  // Refused messages never enter the key's chain: the fourth follows the first.
  CHECK(results[3].confirmed);
  rt::Client client(test::redis_url());
  CHECK_FALSE(client.exists(reserved));
  CHECK_FALSE(client.exists("txbox:dedup:" + reserved + ":" + messages[1].message_id));
  CHECK(ids_of(client.xrange(good)) == std::vector<std::string>{messages[0].message_id, messages[3].message_id});

  // A batch of refused messages only: no connection needed.
  auto down = rt::publisher(fmt::format("redis://127.0.0.1:{}", rt::free_port()));
  for (const auto& r : down->publish(std::span(messages).subspan(1, 2), 10s)) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::permanent);
  }
}

TEST_CASE("messages without a message id are chained too, and not deduplicated", "[redis]") {
  auto stream = test::unique_name("noid");
  std::vector<Message> messages{{"", stream, std::string("k"), "1", {}}, {"", stream, std::string("k"), "2", {}}};
  auto publisher = rt::publisher(test::redis_url());
  require_confirmed(publisher->publish(messages, 10s));
  require_confirmed(publisher->publish(messages, 10s));
  rt::Client client(test::redis_url());
  auto entries = client.xrange(stream);
  REQUIRE(entries.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(entries[i].fields.at("message-id").empty());
    CHECK(entries[i].fields.at("payload") == messages[i % 2].payload);
  }
}

TEST_CASE("probe(): true after a round trip, false within its timeout when the server cannot be reached", "[redis]") {
  auto publisher = rt::publisher(test::redis_url());
  CHECK(publisher->probe(5s));
  CHECK(publisher->healthy());
  require_confirmed(publisher->publish(make_messages(test::unique_name("probe"), 5), 10s));  // the pool still works

  auto down = rt::publisher(fmt::format("redis://127.0.0.1:{}", rt::free_port()));
  auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(down->probe(1s));
  CHECK(std::chrono::steady_clock::now() - start < 1s + 5s);  // wide slack: a shared, noisy machine
  CHECK_FALSE(down->healthy());
  // An address where no Redis answers (the connect times out, or, behind a
  // proxy, something else answers): false, in time.
  auto silent = rt::publisher("redis://10.255.255.1:6379?connect_timeout_ms=300");
  start = std::chrono::steady_clock::now();
  CHECK_FALSE(silent->probe(500ms));
  CHECK(std::chrono::steady_clock::now() - start < 500ms + 5s);
}

TEST_CASE("consumer: fields, delivery attempt 1, ack removes the entry from the pending list", "[redis]") {
  auto stream = test::unique_name("ack");
  auto group = test::unique_name("g");
  auto c = rt::consumer(test::redis_url(), rt::consumer_options(stream, group, "c1"));  // creates the group
  auto messages = make_messages(stream, 3);
  require_confirmed(rt::publisher(test::redis_url())->publish(messages, 10s));
  for (int i = 0; i < 3; ++i) {
    auto d = c->poll(5s);
    REQUIRE(d);
    CHECK(d->message.message_id == messages[i].message_id);
    CHECK(d->message.key == messages[i].key);
    CHECK(d->message.payload == messages[i].payload);
    CHECK(d->message.headers == messages[i].headers);
    CHECK(d->source == stream);
    CHECK(d->delivery_attempt == 1);
    CHECK(d->offset > 1600000000000);
    CHECK(d->ack_token.find('-') != std::string::npos);
    c->ack(*d);
  }
  CHECK_FALSE(c->poll(300ms));
  rt::Client client(test::redis_url());
  CHECK(client.pending(stream, group) == 0);
  c->close();
  auto again = rt::consumer(test::redis_url(), rt::consumer_options(stream, group, "c1"));
  CHECK_FALSE(again->poll(300ms));
}

TEST_CASE("a zero-timeout poll after a read that drained the stream answers from that read, once", "[redis]") {
  auto stream = test::unique_name("drained");
  auto group = test::unique_name("g");
  auto c = rt::consumer(test::redis_url(), rt::consumer_options(stream, group, "c1"));
  auto publisher = rt::publisher(test::redis_url());
  auto first = make_messages(stream, 2, "first");
  require_confirmed(publisher->publish(first, 10s));
  REQUIRE(c->poll(5s));  // one read took both: fewer than `count`, the stream is drained
  // Published after that read: the next zero-timeout poll does not ask (the
  // inbox consumer's batch closes there), the one after it does.
  auto later = make_messages(stream, 1, "later");
  require_confirmed(publisher->publish(later, 10s));
  auto second = c->poll(0ms);
  REQUIRE(second);
  CHECK(second->message.message_id == first[1].message_id);
  CHECK_FALSE(c->poll(0ms));
  auto third = c->poll(0ms);
  REQUIRE(third);
  CHECK(third->message.message_id == later[0].message_id);
  // A full read (`count` entries) says nothing about what came after it.
  auto options = rt::consumer_options(stream + "-full", group, "c1");
  options.count = 2;
  auto full = rt::consumer(test::redis_url(), options);
  require_confirmed(publisher->publish(make_messages(stream + "-full", 3, "full"), 10s));
  REQUIRE(full->poll(5s));
  REQUIRE(full->poll(0ms));
  CHECK(full->poll(0ms));
}

TEST_CASE("a consumer that dies without ack: another one takes the entry over after claim_idle", "[redis]") {
  auto stream = test::unique_name("claim");
  auto group = test::unique_name("g");
  auto options = rt::consumer_options(stream, group, "dies");
  options.claim_idle = 300ms;
  auto dying = rt::consumer(test::redis_url(), options);
  auto messages = make_messages(stream, 1);
  require_confirmed(rt::publisher(test::redis_url())->publish(messages, 10s));
  auto first = dying->poll(5s);
  REQUIRE(first);
  CHECK(first->delivery_attempt == 1);
  dying.reset();  // no ack

  options.consumer_name = "survivor";
  auto survivor = rt::consumer(test::redis_url(), options);
  auto start = std::chrono::steady_clock::now();
  std::optional<txbox::brokers::Delivery> second;
  while (!second && std::chrono::steady_clock::now() - start < 10s) second = survivor->poll(200ms);
  REQUIRE(second);
  CHECK(std::chrono::steady_clock::now() - start >= 200ms);
  CHECK(second->message.message_id == messages[0].message_id);
  CHECK(second->ack_token == first->ack_token);
  CHECK(second->delivery_attempt == 2);
  survivor->ack(*second);
  rt::Client client(test::redis_url());
  CHECK(client.pending(stream, group) == 0);
}

TEST_CASE("a restarted consumer gets its own pending entries first", "[redis]") {
  auto stream = test::unique_name("own");
  auto group = test::unique_name("g");
  auto options = rt::consumer_options(stream, group, "same");
  auto c = rt::consumer(test::redis_url(), options);
  auto messages = make_messages(stream, 5);
  require_confirmed(rt::publisher(test::redis_url())->publish(messages, 10s));
  REQUIRE(c->poll(5s));  // reads all 5 into its pending list
  c.reset();
  auto restarted = rt::consumer(test::redis_url(), options);
  for (int i = 0; i < 5; ++i) {
    auto d = restarted->poll(5s);
    REQUIRE(d);
    CHECK(d->message.message_id == messages[i].message_id);
    CHECK(d->delivery_attempt == 2);
    restarted->ack(*d);
  }
  CHECK_FALSE(restarted->poll(300ms));
}

TEST_CASE("entries delivered more than max_deliveries times go to the dead-letter stream", "[redis]") {
  auto stream = test::unique_name("maxdel");
  auto group = test::unique_name("g");
  auto options = rt::consumer_options(stream, group, "c0");
  options.claim_idle = 50ms;
  options.max_deliveries = 2;
  auto messages = make_messages(stream, 1);
  rt::consumer(test::redis_url(), options);  // creates the group
  require_confirmed(rt::publisher(test::redis_url())->publish(messages, 10s));
  for (int attempt = 1; attempt <= 2; ++attempt) {
    options.consumer_name = fmt::format("c{}", attempt);
    auto c = rt::consumer(test::redis_url(), options);
    std::optional<txbox::brokers::Delivery> d;
    for (int i = 0; i < 50 && !d; ++i) d = c->poll(100ms);
    REQUIRE(d);
    CHECK(d->delivery_attempt == attempt);
  }
  std::this_thread::sleep_for(100ms);
  options.consumer_name = "c3";
  auto c = rt::consumer(test::redis_url(), options);
  CHECK_FALSE(c->poll(500ms));  // the third delivery is dead-lettered instead
  rt::Client client(test::redis_url());
  CHECK(client.pending(stream, group) == 0);
  auto dead = client.xrange(stream + ".dlq");
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].fields.at("message-id") == messages[0].message_id);
  CHECK(dead[0].fields.at("payload") == messages[0].payload);
  CHECK(dead[0].fields.at("dlq-original-destination") == stream);
  CHECK(dead[0].fields.at("dlq-original-position").find('-') != std::string::npos);
  CHECK_THAT(dead[0].fields.at("dlq-error"), Catch::Matchers::Contains("max_deliveries (2)"));
  CHECK(dead[0].fields.at("dlq-error-class") == "max-deliveries");
  CHECK(dead[0].fields.at("dlq-attempts") == "2");
  CHECK(dead[0].fields.at("dlq-timestamp").size() == std::string("2026-11-29T07:55:01.123Z").size());
  CHECK(dead[0].fields.at("dlq-timestamp").back() == 'Z');
}

TEST_CASE("dead_letter() moves the entry to the dead-letter stream and acks it", "[redis]") {
  auto stream = test::unique_name("dl");
  auto group = test::unique_name("g");
  auto options = rt::consumer_options(stream, group, "c");
  options.dead_letter_stream = stream + "-dead";
  auto c = rt::consumer(test::redis_url(), options);
  auto messages = make_messages(stream, 2);
  require_confirmed(rt::publisher(test::redis_url())->publish(messages, 10s));
  auto d = c->poll(5s);
  REQUIRE(d);
  CHECK(c->dead_letter(*d, "cannot parse the payload"));
  rt::Client client(test::redis_url());
  CHECK(client.pending(stream, group) == 1);  // the second one, read in the same batch
  auto dead = client.xrange(stream + "-dead");
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].fields.at("message-id") == messages[0].message_id);
  CHECK(dead[0].fields.at("headers") == R"({"content-type":"text/plain","seq":"0"})");
  CHECK(dead[0].fields.at("dlq-error") == "cannot parse the payload");
  CHECK(dead[0].fields.at("dlq-error-class") == "handler");
  CHECK(dead[0].fields.at("dlq-attempts") == "1");
  CHECK(dead[0].fields.at("dlq-original-destination") == stream);
  CHECK(dead[0].fields.at("dlq-original-position") == d->ack_token);
  CHECK(dead[0].fields.count("dlq-timestamp") == 1);
  auto next = c->poll(5s);
  REQUIRE(next);
  CHECK(next->message.message_id == messages[1].message_id);
}

TEST_CASE("published dead-letter headers are entry fields of their own, as in the consumer's dead letters", "[redis]") {
  auto stream = test::unique_name("relay-dlq");
  txbox::brokers::Message letter{test::unique_name("id"), stream, std::string("k"), "body",
                                 {{"content-type", "text/plain"}, {"dlq-error", "too large"},
                                  {"dlq-error-class", "permanent"}, {"dlq-attempts", "1"}}};
  require_confirmed(rt::publisher(test::redis_url())->publish(std::vector{letter}, 10s));
  rt::Client client(test::redis_url());
  auto entries = client.xrange(stream);
  REQUIRE(entries.size() == 1);
  const auto& f = entries[0].fields;
  CHECK(f.at("headers") == R"({"content-type":"text/plain"})");
  CHECK(f.at("dlq-error") == "too large");
  CHECK(f.at("dlq-error-class") == "permanent");
  CHECK(f.at("dlq-attempts") == "1");
  auto c = rt::consumer(test::redis_url(), rt::consumer_options(stream, test::unique_name("g"), "c"));
  auto d = c->poll(5s);
  REQUIRE(d);
  CHECK(d->message.key == std::optional<std::string>("k"));
  CHECK(d->message.headers == letter.headers);
  c->ack(*d);
}

TEST_CASE("an entry written before the rename, with the key in the field `key`, is read with its key", "[redis]") {
  auto stream = test::unique_name("legacy-key");
  auto group = test::unique_name("g");
  auto c = rt::consumer(test::redis_url(), rt::consumer_options(stream, group, "c"));  // creates the group
  rt::Client client(test::redis_url());
  client.string({"XADD", stream, "*", "message-id", "id-old", "key", "order-7", "payload", "old",
                 "headers", R"({"content-type":"text/plain"})"});
  client.string({"XADD", stream, "*", "message-id", "id-new", "message-key", "order-8", "payload", "new",
                 "headers", "{}"});
  auto old_entry = c->poll(5s);
  REQUIRE(old_entry);
  CHECK(old_entry->message.message_id == "id-old");
  CHECK(old_entry->message.key == std::optional<std::string>("order-7"));
  CHECK(old_entry->message.payload == "old");
  CHECK(old_entry->message.headers ==
        txbox::brokers::Headers{{"content-type", "text/plain"}});  // `key` is not a header
  auto new_entry = c->poll(5s);
  REQUIRE(new_entry);
  CHECK(new_entry->message.key == std::optional<std::string>("order-8"));
  CHECK(new_entry->message.headers.empty());
  c->ack(*old_entry);
  c->ack(*new_entry);
}
