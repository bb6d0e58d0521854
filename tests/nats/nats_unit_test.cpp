// The NATS adapter's pure logic, without a server: the subject checks done
// before sending, how a reply to a JetStream publish is read, and THE error
// classification with its texts.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "errors.hpp"

using txbox::brokers::ErrorClass;
using txbox::nats::detail::classify;
using txbox::nats::detail::describe;
using txbox::nats::detail::Failure;
using txbox::nats::detail::invalid_subject_reason;
using txbox::nats::detail::is_connection_failure;
using txbox::nats::detail::PublishError;
using txbox::nats::detail::read_reply;
using txbox::nats::detail::refuse_subject;
using txbox::nats::detail::reserved_subject_reason;

namespace {

PublishError reported(natsStatus s, int code = 0, bool jetstream = true, bool creates = false) {
  auto e = PublishError::reported(s, {}, static_cast<jsErrCode>(code));
  e.jetstream_available = jetstream;
  e.creates_streams = creates;
  return e;
}

// read_reply on a failed publish as cnats hands it to the ack handler: the
// status, the JetStream error code (0: none) and the text.
std::optional<PublishError> read_error_reply(natsStatus status, int code, const char* text) {
  jsPubAckErr err{};
  err.Err = status;
  err.ErrCode = static_cast<jsErrCode>(code);
  err.ErrText = text;
  return read_reply(nullptr, &err);
}

}  // namespace

TEST_CASE("subjects starting with '$' are refused before sending, permanently, naming the rule", "[unit][nats]") {
  for (const char* subject : {"$JS.API.STREAM.DELETE.orders", "$JS.API.STREAM.PURGE.orders", "$KV.config.key",
                              "$O.bucket.chunk", "$SYS.REQ.SERVER.PING", "$JS.ACK.orders.x", "$anything"}) {
    INFO(subject);
    CHECK_FALSE(reserved_subject_reason(subject).empty());
    CHECK(invalid_subject_reason(subject).empty());  // syntactically fine: only the '$' rule refuses it
    auto refused = refuse_subject(subject);
    REQUIRE(refused);
    CHECK(refused->failure == Failure::reserved_subject);
    CHECK(classify(*refused) == ErrorClass::permanent);
    const auto text = describe(*refused, subject, 10);
    CHECK_THAT(text, Catch::Contains(std::string("'") + subject + "'") && Catch::Contains("starts with '$'") &&
                         Catch::Contains("$JS.API.STREAM.DELETE") && Catch::Contains("retrying cannot help") &&
                         Catch::Contains("not sent"));
  }
  // '$' inside a subject is an ordinary character; only a leading one addresses NATS itself.
  CHECK(reserved_subject_reason("orders.$JS.created").empty());
  CHECK_FALSE(refuse_subject("orders.created"));
  CHECK_FALSE(refuse_subject("orders.$x"));
}

TEST_CASE("invalid subjects are refused before sending, permanently", "[unit][nats]") {
  CHECK(invalid_subject_reason("orders.created").empty());
  for (const char* subject : {"", "orders..created", ".orders", "orders.", "orders.*", "orders.>", "bad subject",
                              "tab\tsubject"}) {
    INFO(subject);
    CHECK_FALSE(invalid_subject_reason(subject).empty());
    auto refused = refuse_subject(subject);
    REQUIRE(refused);
    CHECK(refused->failure == Failure::invalid_subject);
    CHECK(classify(*refused) == ErrorClass::permanent);
    CHECK_THAT(describe(*refused, subject, 10), Catch::Contains("not a valid NATS subject"));
  }
}

TEST_CASE("a reply confirms a message only as a PubAck that names a stream", "[unit][nats]") {
  jsPubAck ack{};
  char stream[] = "ORDERS";
  ack.Stream = stream;
  ack.Sequence = 7;
  CHECK_FALSE(read_reply(&ack, nullptr));  // stored
  ack.Duplicate = true;
  CHECK_FALSE(read_reply(&ack, nullptr));  // stored before: also confirmed

  SECTION("a JSON reply without a stream name (the JetStream API's own answer, '{}')") {
    jsPubAck no_stream{};
    auto e = read_reply(&no_stream, nullptr);
    REQUIRE(e);
    CHECK(e->failure == Failure::not_a_stream);
    CHECK(classify(*e) == ErrorClass::permanent);
    CHECK_THAT(describe(*e, "orders.created", 10),
               Catch::Contains("answered by something that is not a JetStream stream"));
    char empty[] = "";
    no_stream.Stream = empty;
    REQUIRE(read_reply(&no_stream, nullptr));
    CHECK(read_reply(&no_stream, nullptr)->failure == Failure::not_a_stream);
  }
  SECTION("a reply cnats cannot read as a PubAck ('+OK' from a core NATS responder)") {
    // What cnats 3.4.1 hands the ack handler then: the parse status, no
    // JetStream code, and the bare status text.
    for (natsStatus s : {NATS_ERR, NATS_INVALID_ARG}) {
      char text[64];
      std::snprintf(text, sizeof text, "%s", natsStatus_GetText(s));
      auto e = read_error_reply(s, 0, text);
      REQUIRE(e);
      CHECK(e->failure == Failure::not_a_stream);
      CHECK(classify(*e) == ErrorClass::permanent);
    }
  }
  SECTION("JetStream API errors and no responders are read as reported") {
    char text[] = "maximum messages exceeded";
    auto e = read_error_reply(NATS_ERR, JSStreamStoreFailedErr, text);
    REQUIRE(e);
    CHECK(e->failure == Failure::reported);
    CHECK(e->code == JSStreamStoreFailedErr);
    CHECK(e->text == text);
    CHECK(classify(*e) == ErrorClass::transient);

    char no_responders[] = "No responders available for request";
    auto n = read_error_reply(NATS_NO_RESPONDERS, 0, no_responders);
    REQUIRE(n);
    CHECK(n->failure == Failure::reported);
    CHECK(n->status == NATS_NO_RESPONDERS);
  }
  SECTION("neither a PubAck nor an error") {
    auto e = read_reply(nullptr, nullptr);
    REQUIRE(e);
    CHECK(e->failure == Failure::reported);
    CHECK(classify(*e) == ErrorClass::transient);
  }
}

TEST_CASE("publish errors are classified once: outage, transient, permanent", "[unit][nats]") {
  SECTION("outage: the connection is down or JetStream does not answer at all") {
    for (natsStatus s : {NATS_INSUFFICIENT_BUFFER, NATS_CONNECTION_CLOSED, NATS_CONNECTION_DISCONNECTED,
                         NATS_NO_SERVER, NATS_NOT_YET_CONNECTED, NATS_IO_ERROR, NATS_STALE_CONNECTION,
                         NATS_DRAINING}) {
      INFO(natsStatus_GetText(s));
      CHECK(is_connection_failure(s));
      CHECK(classify(reported(s)) == ErrorClass::outage);
      CHECK_THAT(describe(reported(s), "a.b", 10), Catch::Contains("will be retried") && Catch::Contains("'a.b'"));
    }
    CHECK(classify(reported(NATS_NO_RESPONDERS, 0, /*jetstream=*/false)) == ErrorClass::outage);
    CHECK(classify(reported(NATS_NO_RESPONDERS, 0, /*jetstream=*/false, /*creates=*/true)) == ErrorClass::outage);
    CHECK_THAT(describe(reported(NATS_NO_RESPONDERS, 0, false), "a.b", 10), Catch::Contains("without -js"));
    CHECK(classify(reported(NATS_ERR, JSNotEnabledErr)) == ErrorClass::outage);
    CHECK(classify(reported(NATS_ERR, JSNotEnabledForAccountErr)) == ErrorClass::outage);
    CHECK(classify(PublishError::of(Failure::connection_lost)) == ErrorClass::outage);
    CHECK(classify(PublishError::of(Failure::not_sent)) == ErrorClass::outage);
    CHECK_THAT(describe(PublishError::of(Failure::not_sent, "the connection is reconnecting"), "a.b", 10),
               Catch::Contains("not sent") && Catch::Contains("earlier message") && Catch::Contains("reconnecting") &&
                   Catch::Contains("will be retried"));
    CHECK_THAT(describe(PublishError::of(Failure::connection_lost), "a.b", 10),
               Catch::Contains("may or may not be stored") && Catch::Contains("will be retried"));
  }
  SECTION("transient: no PubAck in time on a live connection, JetStream errors that can clear") {
    CHECK_FALSE(is_connection_failure(NATS_TIMEOUT));
    CHECK(classify(reported(NATS_TIMEOUT)) == ErrorClass::transient);
    CHECK(classify(PublishError::of(Failure::no_pub_ack, "waited 1500 ms")) == ErrorClass::transient);
    CHECK_THAT(describe(PublishError::of(Failure::no_pub_ack, "waited 1500 ms"), "a.b", 10),
               Catch::Contains("1500 ms") && Catch::Contains("will be retried"));
    CHECK(classify(reported(NATS_NO_RESPONDERS, 0, true, /*creates=*/true)) == ErrorClass::transient);
    CHECK(classify(reported(NATS_ERR, JSStreamStoreFailedErr)) == ErrorClass::transient);
    CHECK(classify(reported(NATS_ERR, JSInsufficientResourcesErr)) == ErrorClass::transient);
    CHECK(classify(reported(NATS_ERR, JSClusterNotAvailErr)) == ErrorClass::transient);
    CHECK(classify(reported(NATS_ERR)) == ErrorClass::transient);  // unknown
    CHECK(classify(reported(NATS_NO_MEMORY)) == ErrorClass::transient);
  }
  SECTION("permanent: retrying the same message cannot help") {
    CHECK(classify(reported(NATS_NO_RESPONDERS)) == ErrorClass::permanent);  // JetStream answers, no stream
    CHECK_THAT(describe(reported(NATS_NO_RESPONDERS), "a.b", 10),
               Catch::Contains("nats stream add") && Catch::Contains("create_streams=true"));
    CHECK(classify(reported(NATS_MAX_PAYLOAD)) == ErrorClass::permanent);
    CHECK_THAT(describe(reported(NATS_MAX_PAYLOAD), "a.b", 2000000), Catch::Contains("max_payload"));
    CHECK(classify(reported(NATS_INVALID_SUBJECT)) == ErrorClass::permanent);
    CHECK(classify(reported(NATS_NOT_PERMITTED)) == ErrorClass::permanent);
    CHECK(classify(reported(NATS_INVALID_ARG)) == ErrorClass::permanent);
    CHECK(classify(reported(NATS_ERR, JSStreamNotFoundErr)) == ErrorClass::permanent);
    CHECK(classify(reported(NATS_ERR, JSStreamMessageExceedsMaximumErr)) == ErrorClass::permanent);
    CHECK(classify(reported(NATS_ERR, JSBadRequestErr)) == ErrorClass::permanent);
    CHECK(classify(PublishError::of(Failure::not_a_stream)) == ErrorClass::permanent);
    CHECK(classify(PublishError::of(Failure::reserved_subject)) == ErrorClass::permanent);
    CHECK(classify(PublishError::of(Failure::invalid_subject)) == ErrorClass::permanent);
  }
}
