#pragma once
// Private to the Redis adapter (and its tests): how a failed command maps
// onto the broker-neutral ErrorClass, and the human-readable reasons.

#include <string>
#include <string_view>

#include "txbox/brokers/message.hpp"

namespace txbox::redis::detail {

// The error code the dedup-and-XADD script answers with when it refuses a
// message because the previous message of its key in the same batch is not
// stored (see publisher.cpp). Not a code Redis itself uses.
inline constexpr std::string_view kChainRefusedCode = "TXBOXCHAIN";

// What went wrong with one command.
struct Failure {
  enum class Kind {
    unreachable,  // no connection could be made (refused, DNS, connect timeout): nothing was sent
    lost,         // an established connection failed (reset, EOF, write timeout): it is dropped,
                  // and whatever was sent on it has an unknown outcome
    timeout,      // no reply by the caller's deadline: the connection is dropped
    reply,        // the server answered with an error reply; `text` is it ("WRONGTYPE ...")
  };
  Kind kind = Kind::lost;
  std::string text;
};

struct Classification {
  brokers::ErrorClass error_class = brokers::ErrorClass::transient;
  std::string description;  // what happened, what to do, whether it is retried
};

// THE classification of a failed Redis command.
//  outage: the server cannot be reached or refuses all work: connection
//    refused / lost / connect timeout, LOADING, MASTERDOWN, CLUSTERDOWN,
//    READONLY (a replica), MISCONF (persistence failing), NOREPLICAS,
//    "max number of clients". The relay waits for the server instead of
//    counting attempts; probe() answers false while any of these last.
//  transient: per-command conditions that can clear: no reply by the
//    deadline, OOM (maxmemory with noeviction: a smaller or later command
//    may still fit), BUSY, TRYAGAIN, NOSCRIPT left after the reload round,
//    TXBOXCHAIN (the previous message of the key was not stored), unknown
//    error codes.
//  permanent: WRONGTYPE (the destination key holds another type), NOAUTH,
//    WRONGPASS, NOPERM (authorization), ERR (syntax / invalid arguments).
// `destination` is the stream key, `endpoint` host:port for the texts.
Classification classify(const Failure& failure, std::string_view destination, std::string_view endpoint);

}  // namespace txbox::redis::detail
