// RabbitMQ adapter logic that needs no server: destinations and the checks
// that refuse a message, error classification, and the bookkeeping of a
// batch (confirms, returns, a closed channel, holding back a key).

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "batch.hpp"
#include "connection.hpp"
#include "destination.hpp"
#include "errors.hpp"

namespace brokers = txbox::brokers;
namespace detail = txbox::rabbitmq::detail;
using brokers::ErrorClass;
using detail::Batch;
using detail::Cause;
using detail::Failure;

namespace {

constexpr std::size_t kFrameMax = 131072;

brokers::Message message(std::string destination, std::optional<std::string> key = std::nullopt, int n = 0) {
  return {fmt::format("00000000-0000-4000-8000-{:012d}", n), std::move(destination), std::move(key), "{}", {}};
}

std::optional<std::string> refused(const brokers::Message& m) {
  return detail::refuse_reason(m, detail::split_destination(m.destination), kFrameMax);
}

}  // namespace

TEST_CASE("rabbitmq unit: destinations split on the first slash", "[unit][rabbitmq]") {
  auto t = detail::split_destination("orders/created/eu");
  CHECK(t.exchange == "orders");
  CHECK(t.routing_key == "created/eu");
  t = detail::split_destination("a-queue");
  CHECK(t.exchange.empty());
  CHECK(t.routing_key == "a-queue");
  t = detail::split_destination("/a-queue");
  CHECK(t.exchange.empty());
  CHECK(t.routing_key == "a-queue");
  CHECK(detail::where({"", "q"}) == "the default exchange, routing key (queue) 'q'");
  CHECK(detail::where({"ex", "k"}) == "exchange 'ex' routing key 'k'");
}

TEST_CASE("rabbitmq unit: exchanges starting with amq. are refused, the default exchange is not",
          "[unit][rabbitmq]") {
  for (std::string destination : {"amq.direct/x", "amq.topic/orders.created", "amq.rabbitmq.trace/publish.x",
                                  "amq.fanout/", "amq.headers/k", "amq.match/k", "amq./k", "amq.mine/k"}) {
    INFO(destination);
    auto why = refused(message(destination));
    REQUIRE(why);
    CHECK_THAT(*why, Catch::Contains("starting with 'amq.'") && Catch::Contains("RabbitMQ's own") &&
                         Catch::Contains("declare an exchange of your own") && Catch::Contains("not retried"));
    CHECK_THAT(*why, Catch::Contains("'" + detail::split_destination(destination).exchange + "'"));
  }
  // Not an exchange: a queue named like one, through the default exchange.
  for (std::string destination : {"amq.direct", "orders", "/amq.gen-queue", "my.amq/x", "AMQ.direct/x", "amqx/k",
                                  "amq/k", "orders/amq.direct"}) {
    INFO(destination);
    CHECK_FALSE(refused(message(destination)));
  }
}

TEST_CASE("rabbitmq unit: names AMQP cannot carry and headers larger than a frame are refused", "[unit][rabbitmq]") {
  const std::string n255(255, 'n'), n256(256, 'n');
  CHECK_FALSE(refused(message(n255)));
  CHECK_THAT(*refused(message(n256)), Catch::Contains("the queue name") && Catch::Contains("256 bytes"));
  CHECK_FALSE(refused(message(n255 + "/" + n255)));
  CHECK_THAT(*refused(message(n256 + "/k")), Catch::Contains("the exchange name"));
  CHECK_THAT(*refused(message("ex/" + n256)), Catch::Contains("the routing key") && Catch::Contains("at most 255"));

  auto m = message("q");
  m.headers = {{n255, "v"}, {"content-type", n255}};
  CHECK_FALSE(refused(m));
  m.headers = {{n256, "v"}};
  CHECK_THAT(*refused(m), Catch::Contains("header name"));
  m.headers = {{"content-type", n256}};
  CHECK_THAT(*refused(m), Catch::Contains("content-type"));

  // The content header frame: computed size, exactly a frame, one byte more.
  m.headers = {{"h", ""}};
  const std::size_t base = detail::header_frame_size(m);
  m.headers = {{"h", std::string(kFrameMax - base, 'x')}};
  CHECK(detail::header_frame_size(m) == kFrameMax);
  CHECK_FALSE(refused(m));
  m.headers = {{"h", std::string(kFrameMax - base + 1, 'x')}};
  CHECK_THAT(*refused(m), Catch::Contains("more than one AMQP frame") && Catch::Contains("fewer or smaller headers"));
  // Our own message-id / message-key replace headers of those names.
  auto keyed = message("q", "k");
  auto with_own = keyed;
  with_own.headers = {{"message-id", "x"}, {"message-key", "y"}};
  CHECK(detail::header_frame_size(with_own) == detail::header_frame_size(keyed));
}

TEST_CASE("rabbitmq unit: classification of every cause", "[unit][rabbitmq]") {
  struct Case {
    Failure failure;
    ErrorClass expected;
  };
  std::vector<Case> cases{
      // outage: the broker as a whole is unavailable
      {{Cause::unreachable, AMQP_STATUS_SOCKET_ERROR, "cannot connect"}, ErrorClass::outage},
      {{Cause::unreachable, 0, "unreachable; next attempt in 100 ms"}, ErrorClass::outage},
      {{Cause::library, AMQP_STATUS_SOCKET_ERROR, "socket"}, ErrorClass::outage},
      {{Cause::library, AMQP_STATUS_CONNECTION_CLOSED, "closed"}, ErrorClass::outage},
      {{Cause::library, AMQP_STATUS_HEARTBEAT_TIMEOUT, "heartbeat"}, ErrorClass::outage},
      {{Cause::library, AMQP_STATUS_TIMEOUT, "rpc timeout"}, ErrorClass::outage},
      {{Cause::blocked, 0, "blocked (low on memory)"}, ErrorClass::outage},
      {{Cause::connection_closed, 320, "CONNECTION_FORCED - broker forced connection closure"}, ErrorClass::outage},
      {{Cause::connection_closed, 541, "INTERNAL_ERROR"}, ErrorClass::outage},
      {{Cause::connection_closed, 403, "ACCESS_REFUSED - login refused"}, ErrorClass::outage},
      {{Cause::connection_closed, 530, "NOT_ALLOWED - vhost"}, ErrorClass::outage},
      // transient: this message, later
      {{Cause::nack, 0, "nacked"}, ErrorClass::transient},
      {{Cause::timeout, 0, "no confirm"}, ErrorClass::transient},
      {{Cause::channel_closed, 405, "RESOURCE_LOCKED"}, ErrorClass::transient},
      {{Cause::channel_closed, 406, "PRECONDITION_FAILED - inequivalent arg"}, ErrorClass::transient},
      {{Cause::channel_closed, 541, "INTERNAL_ERROR"}, ErrorClass::transient},
      {{Cause::connection_closed, 505, "UNEXPECTED_FRAME"}, ErrorClass::transient},
      {{Cause::connection_closed, 501, "FRAME_ERROR"}, ErrorClass::transient},
      // permanent: this message can never succeed
      {{Cause::returned, 312, "NO_ROUTE"}, ErrorClass::permanent},
      {{Cause::refused, 0, "amq. exchange"}, ErrorClass::permanent},
      {{Cause::library, AMQP_STATUS_TABLE_TOO_BIG, "headers"}, ErrorClass::permanent},
      {{Cause::channel_closed, 404, "NOT_FOUND - no exchange 'x' in vhost '/'"}, ErrorClass::permanent},
      {{Cause::channel_closed, 403, "ACCESS_REFUSED - access to exchange 'x' refused"}, ErrorClass::permanent},
      {{Cause::channel_closed, 311, "CONTENT_TOO_LARGE"}, ErrorClass::permanent},
      {{Cause::channel_closed, 406,
        "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576"},
       ErrorClass::permanent},
  };
  for (const auto& c : cases) {
    INFO(static_cast<int>(c.failure.cause) << " " << c.failure.code << " " << c.failure.text);
    CHECK(detail::classify(c.failure) == c.expected);
  }
}

TEST_CASE("rabbitmq unit: error texts say what happened, what to do and whether it is retried", "[unit][rabbitmq]") {
  auto blocked = detail::describe({Cause::blocked, 0, "RabbitMQ at amqp://u@h:5672/ blocked the connection (low on memory)"});
  CHECK_THAT(blocked, Catch::Contains("low on memory") && Catch::Contains("memory or disk alarm") &&
                          Catch::Contains("will be retried"));
  auto size = detail::describe({Cause::channel_closed, 406, "RabbitMQ closed the channel: PRECONDITION_FAILED - message "
                                                            "size 2097152 is larger than configured max size 1048576"});
  CHECK_THAT(size, Catch::Contains("PRECONDITION_FAILED 406") && Catch::Contains("fix the message or the broker limits") &&
                       Catch::Contains("not retried"));
  CHECK_THAT(detail::describe({Cause::channel_closed, 404, "no exchange"}), Catch::Contains("declare it"));
  CHECK_THAT(detail::describe({Cause::channel_closed, 403, "access refused"}), Catch::Contains("grant the user"));
  CHECK_THAT(detail::describe({Cause::library, AMQP_STATUS_SOCKET_ERROR, "waiting"}),
             Catch::Contains("connection dropped") && Catch::Contains("will be retried"));
  CHECK_THAT(detail::describe({Cause::unreachable, 0, "cannot connect"}), Catch::Contains("will be retried"));
  CHECK_THAT(detail::describe({Cause::connection_closed, 320, "closed"}), Catch::Contains("will be retried"));
  CHECK_THAT(detail::describe({Cause::nack, 0, "nacked"}), Catch::Contains("will be retried"));
}

TEST_CASE("rabbitmq unit: send_timeout_ms is an option, the display URL has no password", "[unit][rabbitmq]") {
  auto url = brokers::parse_broker_url("amqp://user:s3cret@127.0.0.1:5673/orders?send_timeout_ms=2500");
  auto endpoint = detail::parse_endpoint(url, {}, 0);
  CHECK(endpoint.send_timeout == std::chrono::milliseconds(2500));
  CHECK(endpoint.display.find("s3cret") == std::string::npos);
  CHECK(detail::parse_endpoint(brokers::parse_broker_url("amqp://127.0.0.1/"), {}, 0).send_timeout ==
        std::chrono::milliseconds(30000));
  CHECK(detail::parse_endpoint(url, {{"send_timeout_ms", "0"}}, 0).send_timeout == std::chrono::milliseconds(0));
  CHECK_THROWS_WITH(detail::parse_endpoint(url, {{"send_timeout_ms", "-1"}}, 0), Catch::Contains("send_timeout_ms"));
  CHECK_THROWS_WITH(detail::parse_endpoint(url, {{"bogus", "1"}}, 0), Catch::Contains("send_timeout_ms"));
}

namespace {
std::vector<brokers::Message> keyed_batch() {
  // 0 a, 1 b, 2 a, 3 (no key), 4 b, 5 a
  return {message("q", "a", 0), message("q", "b", 1), message("q", "a", 2),
          message("q", std::nullopt, 3), message("q", "b", 4), message("q", "a", 5)};
}
}  // namespace

TEST_CASE("rabbitmq unit: batch bookkeeping of acks, multiple acks, nacks and returns", "[unit][rabbitmq]") {
  auto messages = keyed_batch();
  Batch batch(messages);
  for (std::size_t i = 0; i < 6; ++i) batch.published(i, 11 + i);  // tags 11..16
  CHECK(batch.in_flight() == 6);
  batch.confirm(12, /*multiple=*/true, true);  // 11, 12
  CHECK(batch.state(0) == Batch::State::settled);
  CHECK(batch.state(1) == Batch::State::settled);
  batch.returned(messages[3].message_id, 312, "NO_ROUTE");
  batch.confirm(14, false, true);  // 3: returned, then acked
  batch.confirm(13, false, false);  // 2: nacked
  batch.confirm(99, true, true);    // multiple: everything up to 99, i.e. 15 and 16
  CHECK(batch.in_flight() == 0);
  batch.confirm(7, false, true);  // an earlier channel's tag: ignored
  auto r = batch.results("deadline");
  CHECK(r[0].confirmed);
  CHECK(r[1].confirmed);
  CHECK_FALSE(r[2].confirmed);
  CHECK(r[2].error_class == ErrorClass::transient);
  CHECK_THAT(r[2].error, Catch::Contains("nacked") && Catch::Contains("will be retried"));
  CHECK_FALSE(r[3].confirmed);
  CHECK(r[3].error_class == ErrorClass::permanent);
  CHECK_THAT(r[3].error, Catch::Contains("no queue named 'q'"));
  CHECK(r[4].confirmed);
  CHECK(r[5].confirmed);  // already in flight when 2 was nacked: not held back
  CHECK(batch.confirmed_count() == 4);
}

TEST_CASE("rabbitmq unit: a failure holds back the later unsent messages of its key only", "[unit][rabbitmq]") {
  auto messages = keyed_batch();
  Batch batch(messages);
  batch.published(0, 1);
  batch.published(1, 2);
  batch.confirm(1, false, false);  // 0 (key a) nacked; 2 and 5 (key a) are unsent
  CHECK(batch.state(2) == Batch::State::settled);
  CHECK(batch.state(5) == Batch::State::settled);
  CHECK(batch.state(3) == Batch::State::unsent);
  CHECK(batch.state(4) == Batch::State::unsent);
  auto r = batch.results("deadline");
  CHECK(r[2].error_class == ErrorClass::transient);
  CHECK_THAT(r[2].error, Catch::Contains("not sent") && Catch::Contains(messages[0].message_id) &&
                             Catch::Contains("key 'a'") && Catch::Contains("will be retried after it"));
  CHECK_THAT(r[1].error, Catch::Contains("deadline"));  // in flight at the deadline
  CHECK_THAT(r[3].error, Catch::Contains("not published before the deadline"));

  // A permanent failure does not hold anything back.
  Batch other(messages);
  other.fail(0, {Cause::refused, 0, "refused"});
  CHECK(other.state(2) == Batch::State::unsent);
  // An outage holds back with its own class.
  other.fail(1, {Cause::blocked, 0, "blocked"});
  CHECK(other.results("d")[4].error_class == ErrorClass::outage);
  CHECK(other.state(3) == Batch::State::unsent);
}

TEST_CASE("rabbitmq unit: a closed channel makes the messages in flight suspects, isolation settles them",
          "[unit][rabbitmq]") {
  auto messages = keyed_batch();
  Batch batch(messages);
  batch.published(0, 1);
  batch.published(1, 2);
  batch.published(2, 3);
  batch.confirm(1, false, true);
  Failure closed{Cause::channel_closed, 406,
                 "RabbitMQ closed the channel: PRECONDITION_FAILED - message size 2097152 is larger than configured "
                 "max size 1048576"};
  batch.channel_closed(closed);
  CHECK(batch.in_flight() == 0);
  CHECK(batch.state(0) == Batch::State::settled);
  CHECK(batch.state(1) == Batch::State::suspect);
  CHECK(batch.state(2) == Batch::State::suspect);
  CHECK(batch.state(3) == Batch::State::unsent);
  CHECK(batch.first(Batch::State::suspect) == std::optional<std::size_t>(1));
  batch.confirm(2, false, true);  // a late ack of the closed channel's tag: not in flight any more
  CHECK(batch.state(1) == Batch::State::suspect);

  // The deadline passes before isolation: suspects say why they are unresolved.
  auto early = batch.results("deadline");
  CHECK(early[1].error_class == ErrorClass::transient);
  CHECK_THAT(early[1].error, Catch::Contains("closed the channel") && Catch::Contains("larger than configured") &&
                                 Catch::Contains("re-published alone"));
  CHECK_THAT(early[3].error, Catch::Contains("recovering from a closed channel"));

  // Isolation: 1 alone on a new channel is confirmed; 2 alone closes it.
  batch.published(1, 1);
  batch.confirm(1, false, true);
  CHECK(batch.state(1) == Batch::State::settled);
  batch.published(2, 2);
  batch.channel_closed(closed);
  CHECK(batch.state(2) == Batch::State::suspect);
  batch.fail(2, closed);
  batch.suspects_to_unsent();
  auto r = batch.results("deadline");
  CHECK(r[1].confirmed);
  CHECK(r[2].error_class == ErrorClass::permanent);
  CHECK_THAT(r[2].error, Catch::Contains("larger than configured max size"));
  CHECK(batch.state(5) == Batch::State::unsent);  // key a: a permanent failure holds nothing back
}

TEST_CASE("rabbitmq unit: suspects of a key failing transiently hold back the later ones", "[unit][rabbitmq]") {
  auto messages = keyed_batch();
  Batch batch(messages);
  for (std::size_t i = 0; i < 6; ++i) batch.published(i, i + 1);
  batch.channel_closed({Cause::channel_closed, 541, "INTERNAL_ERROR"});
  CHECK(batch.count(Batch::State::suspect) == 6);
  batch.fail(0, {Cause::channel_closed, 541, "INTERNAL_ERROR"});  // 0 (a) alone: transient
  CHECK(batch.state(2) == Batch::State::settled);                // a: held back
  CHECK(batch.state(5) == Batch::State::settled);
  CHECK(batch.state(1) == Batch::State::suspect);  // b: goes on
  batch.suspects_to_unsent();
  CHECK(batch.count(Batch::State::unsent) == 3);  // 1, 3, 4
  auto r = batch.results("d");
  CHECK(r[0].error_class == ErrorClass::transient);
  CHECK(r[5].error_class == ErrorClass::transient);
  CHECK_THAT(r[5].error, Catch::Contains("not sent"));
}

TEST_CASE("rabbitmq unit: a lost connection fails everything unsettled as an outage", "[unit][rabbitmq]") {
  auto messages = keyed_batch();
  Batch batch(messages);
  batch.published(0, 1);
  batch.published(1, 2);
  batch.confirm(1, false, true);
  batch.fail_unsettled({Cause::library, AMQP_STATUS_SOCKET_ERROR, "waiting for confirms: a socket error occurred"});
  CHECK(batch.in_flight() == 0);
  auto r = batch.results("deadline");
  CHECK(r[0].confirmed);
  for (std::size_t i = 1; i < r.size(); ++i) {
    CHECK_FALSE(r[i].confirmed);
    CHECK(r[i].error_class == ErrorClass::outage);
    CHECK_THAT(r[i].error, Catch::Contains("socket error") && Catch::Contains("will be retried"));
  }
}
