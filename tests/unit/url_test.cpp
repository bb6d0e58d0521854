#include <catch2/catch.hpp>

#include "txbox/brokers/url.hpp"

using txbox::brokers::parse_broker_url;

TEST_CASE("broker URL with several hosts and default ports", "[url]") {
  auto url = parse_broker_url("kafka://a.example:9093,b.example");
  CHECK(url.scheme == "kafka");
  REQUIRE(url.hosts.size() == 2);
  CHECK(url.hosts[0].host == "a.example");
  CHECK(url.hosts[0].port == 9093);
  CHECK(url.hosts[1].port == 0);
  CHECK(url.host_list(9092) == "a.example:9093,b.example:9092");
}

TEST_CASE("broker URL with credentials, vhost, IPv6 and query", "[url]") {
  auto url = parse_broker_url("AMQP://guest:p%40ss@[::1]:5672/my%2Fvhost?heartbeat=10");
  CHECK(url.scheme == "amqp");
  CHECK(url.user == "guest");
  CHECK(url.password == "p@ss");
  CHECK(url.hosts.at(0).host == "::1");
  CHECK(url.hosts.at(0).port == 5672);
  CHECK(url.path == "my/vhost");
  CHECK(url.query.at("heartbeat") == "10");
}

TEST_CASE("malformed broker URLs are rejected with the reason", "[url]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(parse_broker_url(""), Contains("empty"));
  CHECK_THROWS_WITH(parse_broker_url("localhost:9092"), Contains("missing scheme"));
  CHECK_THROWS_WITH(parse_broker_url("kafka://"), Contains("no host"));
  CHECK_THROWS_WITH(parse_broker_url("kafka://host:99999"), Contains("port '99999'"));
  CHECK_THROWS_WITH(parse_broker_url("kafka://host:abc"), Contains("port 'abc'"));
  CHECK_THROWS_WITH(parse_broker_url("kafka://a:1,,b:2"), Contains("empty host"));
  CHECK_THROWS_WITH(parse_broker_url("kafka://host:"), Contains("empty port"));
  CHECK_THROWS_WITH(parse_broker_url("kafka://h/%zz"), Contains("%-escape"));
}

TEST_CASE("a password with an unencoded '@' or '/' is taken whole and never echoed", "[url]") {
  using Catch::Matchers::Contains;
  auto url = parse_broker_url("amqp://relay:s3cr@t/pw@rabbit:5672/shop");
  CHECK(url.user == "relay");
  CHECK(url.password == "s3cr@t/pw");
  CHECK(url.hosts.at(0).host == "rabbit");
  CHECK(url.path == "shop");
  CHECK(url.redacted == "amqp://***@rabbit:5672/shop");
  CHECK(txbox::brokers::redact_broker_url("kafka://k:1") == "kafka://k:1");
  CHECK(txbox::brokers::redact_broker_url("redis://:pw@r:6379/0?maxlen=5") == "redis://***@r:6379/0?maxlen=5");
  CHECK_THROWS_WITH(parse_broker_url("amqp://relay:s3cr@t/pw@rabbit:notaport/x"), !Contains("s3cr"));
  CHECK_THROWS_WITH(parse_broker_url("amqp://relay:s3cr@t/pw@rabbit:notaport/x"), Contains("amqp://***@rabbit"));
}
