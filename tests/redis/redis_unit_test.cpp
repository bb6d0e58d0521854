// Redis adapter logic that needs no server: the destinations it refuses, the
// one error classification, and the per-key chain of a batch (which message
// must be stored before which, and what a second round sends again).
#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <vector>

#include "batch_plan.hpp"
#include "errors.hpp"

namespace detail = txbox::redis::detail;
using Catch::Matchers::Contains;
using detail::Failure;
using detail::FirstRound;
using txbox::brokers::ErrorClass;
using txbox::brokers::Message;

namespace {
std::vector<Message> keyed(std::vector<std::optional<std::string>> keys) {
  std::vector<Message> messages;
  for (size_t i = 0; i < keys.size(); ++i) messages.push_back({"id-" + std::to_string(i), "orders", keys[i], "p", {}});
  return messages;
}

using Predecessors = std::vector<std::optional<size_t>>;
constexpr std::nullopt_t none = std::nullopt;

std::vector<std::pair<size_t, std::optional<size_t>>> resends(const std::vector<Message>& messages,
                                                              std::vector<FirstRound> outcomes) {
  std::vector<std::pair<size_t, std::optional<size_t>>> out;
  for (const auto& r : detail::second_round(messages, outcomes)) out.emplace_back(r.index, r.predecessor);
  return out;
}

detail::Classification reply(const std::string& text) {
  return detail::classify({Failure::Kind::reply, text}, "orders", "127.0.0.1:6379");
}
}  // namespace

TEST_CASE("destinations in txbox's own key space, and empty ones, are refused naming the rule", "[unit]") {
  for (std::string refused : {"txbox:dedup:x", "txbox:", "txbox:orders"}) {
    auto reason = detail::destination_refusal(refused);
    INFO(refused);
    REQUIRE(reason);
    CHECK_THAT(*reason, Contains("may not start with 'txbox:'"));
    CHECK_THAT(*reason, Contains("'" + refused + "'"));
    CHECK_THAT(*reason, Contains("not retried"));
  }
  auto empty = detail::destination_refusal("");
  REQUIRE(empty);
  CHECK_THAT(*empty, Contains("empty"));
  for (std::string allowed : {"orders", "txbox", "txbox-orders", "my:txbox:x", "TXBOX:x", " txbox:x"}) {
    INFO(allowed);
    CHECK_FALSE(detail::destination_refusal(allowed));
  }
  CHECK(detail::dedup_key("orders", "5f0c") == "txbox:dedup:orders:5f0c");
  // A dedup key is itself a refused destination.
  CHECK(detail::destination_refusal(detail::dedup_key("orders", "5f0c")));
}

TEST_CASE("classification: outage, transient and permanent, each text says whether it is retried", "[unit]") {
  auto failure = [](Failure::Kind kind, const std::string& text) {
    return detail::classify({kind, text}, "orders", "127.0.0.1:6379");
  };
  auto unreachable = failure(Failure::Kind::unreachable, "Connection refused");
  CHECK(unreachable.error_class == ErrorClass::outage);
  CHECK_THAT(unreachable.description, Contains("cannot connect to Redis at 127.0.0.1:6379 (Connection refused)"));
  auto lost = failure(Failure::Kind::lost, "server closed the connection");
  CHECK(lost.error_class == ErrorClass::outage);
  CHECK_THAT(lost.description, Contains("was lost"));
  CHECK_THAT(lost.description, Contains("unknown"));
  auto timeout = failure(Failure::Kind::timeout, "the deadline passed, 3 of 10 replies unread");
  CHECK(timeout.error_class == ErrorClass::transient);
  CHECK_THAT(timeout.description, Contains("3 of 10 replies unread"));

  // Replies by class: each is classified so, its description saying
  // whether it is retried (and, for an outage, quoting the reply).
  struct RepliesOfAClass {
    std::vector<std::string> texts;
    ErrorClass error_class;
    std::string says;
    bool quotes_reply;
  };
  const std::vector<RepliesOfAClass> classes{
      {{"LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "CLUSTERDOWN The cluster is down", "READONLY You can't write against a read only replica.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "NOREPLICAS Not enough good replicas to write.", "ERR max number of clients reached"},
       ErrorClass::outage,
       "refuses all writes",
       true},
      {{"OOM command not allowed when used memory > 'maxmemory'. script: abc, on @user_script:9.",
        "TRYAGAIN Multiple keys request during rehashing of slot", "NOSCRIPT No matching script.",
        "TXBOXCHAIN the previous message of this key in the batch (txbox:dedup:o:1) is not stored",
        "SOMETHINGNEW unknown to this version"},
       ErrorClass::transient,
       "will be retried",
       false},
      {{"WRONGTYPE Operation against a key holding the wrong kind of value", "NOAUTH Authentication required.",
        "WRONGPASS invalid username-password pair or user is disabled.",
        "NOPERM this user has no permissions to access one of the keys used as arguments",
        "ERR wrong number of arguments for 'xadd' command"},
       ErrorClass::permanent,
       "not retried",
       false},
  };
  for (const auto& expected : classes) {
    for (const auto& text : expected.texts) {
      INFO(text);
      auto c = reply(text);
      CHECK(c.error_class == expected.error_class);
      CHECK_THAT(c.description, Contains(expected.says));
      if (expected.quotes_reply) CHECK_THAT(c.description, Contains(text));
    }
  }
  CHECK_THAT(reply("OOM command not allowed").description, Contains("out of memory"));
  // A running script blocks the whole server: an outage, not this message's fault.
  CHECK(reply("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.").error_class ==
        ErrorClass::outage);
  CHECK_THAT(reply("TXBOXCHAIN x").description,
             Contains("the earlier message of its key in the same batch was not stored (per-key order); will be "
                      "retried after it"));
  CHECK_THAT(reply("WRONGTYPE x").description, Contains("key 'orders' holds a value that is not a stream"));
  // The code is the first word only: a text mentioning a code elsewhere is not that code.
  CHECK(reply("ERR LOADING is not the code here").error_class == ErrorClass::permanent);
  CHECK(reply("OOMX something").error_class == ErrorClass::transient);
}

TEST_CASE("the chain: each keyed message depends on the previous sent message of its key", "[unit]") {
  auto messages = keyed({"a", "b", "a", none, "a", "b", none});
  CHECK(detail::predecessors(messages, std::vector<bool>(7, true)) == Predecessors{none, none, 0, none, 2, 1, none});
  // A message refused before sending (a txbox: destination) leaves the chain.
  std::vector<bool> sent(7, true);
  sent[2] = false;
  CHECK(detail::predecessors(messages, sent) == Predecessors{none, none, none, none, 0, 1, none});
  sent[0] = false;
  CHECK(detail::predecessors(messages, sent) == Predecessors{none, none, none, none, none, 1, none});
  CHECK(detail::predecessors({}, {}).empty());
  // Keys are compared exactly: "a" and "A" are different keys, "" is a key.
  auto exact = keyed({"a", "A", "", ""});
  CHECK(detail::predecessors(exact, std::vector<bool>(4, true)) == Predecessors{none, none, none, 2});
}

TEST_CASE("second round: NOSCRIPT messages and chain refusals behind them or behind a permanent failure", "[unit]") {
  using R = FirstRound;
  using Plan = std::vector<std::pair<size_t, std::optional<size_t>>>;
  auto abc = keyed({"k", "k", "k"});

  SECTION("nothing to do when everything was stored or failed for good") {
    CHECK(resends(abc, {R::stored, R::stored, R::stored}).empty());
    CHECK(resends(abc, {R::stored, R::removed, R::stored}).empty());
  }
  SECTION("a flushed script cache: everything again, in order, chained as before") {
    CHECK(resends(abc, {R::noscript, R::noscript, R::noscript}) == Plan{{0, none}, {1, 0}, {2, 1}});
    CHECK(resends(abc, {R::stored, R::noscript, R::noscript}) == Plan{{1, 0}, {2, 1}});
  }
  SECTION("refused behind a NOSCRIPT predecessor (another connection reloaded the script in between)") {
    CHECK(resends(abc, {R::noscript, R::chain_refused, R::chain_refused}) == Plan{{0, none}, {1, 0}, {2, 1}});
  }
  SECTION("a transient failure keeps the rest of its key refused") {
    CHECK(resends(abc, {R::failed, R::chain_refused, R::chain_refused}).empty());
    CHECK(resends(abc, {R::stored, R::failed, R::chain_refused}).empty());
    // NOSCRIPT behind a failed one goes again: the script then refuses it, its true result.
    CHECK(resends(abc, {R::failed, R::noscript, R::chain_refused}) == Plan{{1, 0}});
  }
  SECTION("a permanent failure leaves the sequence: the next one is chained to the one before") {
    CHECK(resends(abc, {R::stored, R::removed, R::chain_refused}) == Plan{{2, 0}});
    CHECK(resends(abc, {R::removed, R::chain_refused, R::chain_refused}) == Plan{{1, none}, {2, 1}});
    auto four = keyed({"k", "k", "k", "k"});
    CHECK(resends(four, {R::failed, R::removed, R::chain_refused, R::chain_refused}).empty());
  }
  SECTION("other keys and keyless messages are independent") {
    auto mixed = keyed({"k", "j", "k", none, "j", "k"});
    CHECK(resends(mixed, {R::removed, R::failed, R::chain_refused, R::noscript, R::chain_refused, R::chain_refused}) ==
          Plan{{2, none}, {3, none}, {5, 2}});
  }
}
