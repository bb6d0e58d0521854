// Redis Streams adapter against TXBOX_TEST_REDIS_URL: pipelined idempotent
// publishing, error classification, consumer group ack, XAUTOCLAIM takeover,
// dead-letter stream.
#include <fmt/format.h>

#include <thread>

#include "redis_support.hpp"

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
      CHECK(f.at("key") == *messages[i].key);
    else
      CHECK(f.count("key") == 0);
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

TEST_CASE("a destination key that is not a stream is a permanent error with a hint", "[redis]") {
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
  CHECK(results[2].confirmed);
  CHECK(publisher->healthy());
  // The rejected message was not remembered as published.
  client.cmd({"DEL", stream});
  require_confirmed(publisher->publish(std::span(messages).subspan(1, 1), 10s));
  CHECK(client.xlen(stream) == 1);
}

TEST_CASE("bad URLs are rejected naming the problem; an unreachable server is transient and unhealthy", "[redis]") {
  using txbox::brokers::parse_broker_url;
  CHECK_THROWS_WITH(rt::publisher("redis://a:1,b:2"), Catch::Matchers::Contains("exactly one host"));
  CHECK_THROWS_WITH(rt::publisher("redis://a/x"), Catch::Matchers::Contains("database number"));
  CHECK_THROWS_WITH(rt::publisher("redis://a?maxlen=-3"), Catch::Matchers::Contains("maxlen"));
  CHECK_THROWS_WITH(rt::publisher("redis://a?foo=1"), Catch::Matchers::Contains("unknown option 'foo'"));
  auto publisher = rt::publisher(fmt::format("redis://127.0.0.1:{}", rt::free_port()));
  auto results = publisher->publish(make_messages("s", 3), 2s);
  for (const auto& r : results) {
    CHECK_FALSE(r.confirmed);
    CHECK(r.error_class == ErrorClass::transient);
    CHECK_THAT(r.error, Catch::Matchers::Contains("check that the server runs"));
  }
  CHECK_FALSE(publisher->healthy());
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
  CHECK(dead[0].fields.at("dlq-original-stream") == stream);
  CHECK(dead[0].fields.at("dlq-original-id").find('-') != std::string::npos);
  CHECK_THAT(dead[0].fields.at("dlq-error"), Catch::Matchers::Contains("max_deliveries (2)"));
  CHECK(dead[0].fields.count("dlq-timestamp") == 1);
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
  CHECK(dead[0].fields.at("dlq-original-id") == d->ack_token);
  auto next = c->poll(5s);
  REQUIRE(next);
  CHECK(next->message.message_id == messages[1].message_id);
}
