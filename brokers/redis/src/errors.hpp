#pragma once
// Private to the Redis adapter (and its tests): how a failed command maps
// onto the broker-neutral ErrorClass, and the human-readable reasons.

#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::redis::detail {

// What went wrong with one command.
struct Failure {
  enum class Kind {
    io,       // the connection failed (refused, reset, EOF, protocol error): it is dropped
    timeout,  // no reply within the deadline: the connection is dropped
    reply,    // the server answered with an error reply; `text` is it ("WRONGTYPE ...")
  };
  Kind kind = Kind::io;
  std::string text;
};

struct Classification {
  brokers::ErrorClass error_class = brokers::ErrorClass::transient;
  // The server as a whole cannot take writes now (unreachable, loading,
  // out of memory, read-only replica, ...): the publisher reports
  // healthy() == false so the relay waits instead of counting attempts.
  bool server_unavailable = false;
  std::string description;  // what happened and what to do next
};

// THE classification of a failed Redis command.
//  transient + server unavailable: I/O errors, timeouts, EOF, LOADING, BUSY,
//    MASTERDOWN, CLUSTERDOWN, READONLY, MISCONF, NOREPLICAS, "max number of
//    clients", and OOM: with maxmemory-policy noeviction the server refuses
//    writes until memory is freed (consumers trim or the operator raises
//    maxmemory); that is an outage of the server, not a fault of the
//    message, so it is retried without counting attempts rather than
//    dead-lettering every message while it lasts.
//  transient: TRYAGAIN, NOSCRIPT, unknown error codes.
//  permanent: WRONGTYPE (the destination key holds another type), NOAUTH,
//    WRONGPASS, NOPERM (authorization), ERR (syntax / invalid arguments).
// `destination` is the stream key, `endpoint` host:port for the texts.
Classification classify(const Failure& failure, std::string_view destination, std::string_view endpoint);

}  // namespace txbox::redis::detail
