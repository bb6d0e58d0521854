#include "errors.hpp"

#include <fmt/format.h>

namespace txbox::redis::detail {

namespace {
std::string_view code_of(std::string_view text) {
  auto space = text.find(' ');
  return text.substr(0, space);
}
bool contains(std::string_view text, std::string_view needle) { return text.find(needle) != std::string_view::npos; }
}  // namespace

Classification classify(const Failure& failure, std::string_view destination, std::string_view endpoint) {
  using brokers::ErrorClass;
  switch (failure.kind) {
    case Failure::Kind::unreachable:
      return {ErrorClass::outage,
              fmt::format("cannot connect to Redis at {} ({}): check that the server runs and is reachable; "
                          "will be retried once it answers",
                          endpoint, failure.text)};
    case Failure::Kind::lost:
      return {ErrorClass::outage,
              fmt::format("the connection to Redis at {} was lost ({}) before the reply came: whether the server "
                          "stored the message is unknown; will be retried once the server answers (a copy it did "
                          "store is recognised by its dedup key)",
                          endpoint, failure.text)};
    case Failure::Kind::timeout:
      return {ErrorClass::transient,
              fmt::format("no reply from Redis at {} in time ({}): the server is overloaded or hung, or the publish "
                          "timeout is too short for the batch; will be retried (a copy it did store is recognised "
                          "by its dedup key)",
                          endpoint, failure.text)};
    case Failure::Kind::reply:
      break;
  }
  const std::string_view text = failure.text;
  const std::string_view code = code_of(text);
  if (code == kChainRefusedCode)
    return {ErrorClass::transient,
            fmt::format("not stored in stream '{}' because the earlier message of its key in the same batch was "
                        "not stored (per-key order); will be retried after it [{}]",
                        destination, text)};
  if (code == "WRONGTYPE")
    return {ErrorClass::permanent,
            fmt::format("key '{}' holds a value that is not a stream: choose another destination, or delete "
                        "the key; not retried [{}]",
                        destination, text)};
  if (code == "NOAUTH" || code == "WRONGPASS")
    return {ErrorClass::permanent,
            fmt::format("Redis at {} rejected the credentials: put the right password in the URL "
                        "(redis://:password@host:port or redis://user:password@host:port); not retried [{}]",
                        endpoint, text)};
  if (code == "NOPERM")
    return {ErrorClass::permanent,
            fmt::format("the Redis user may not write stream '{}': grant it the commands EVALSHA, SCRIPT, SET, "
                        "XADD, TYPE, EXISTS, DEL, PING and the keys '{}' and 'txbox:dedup:*' (ACL SETUSER); not "
                        "retried [{}]",
                        destination, destination, text)};
  if (code == "OOM")
    return {ErrorClass::transient,
            fmt::format("Redis at {} is out of memory (maxmemory reached, writes refused): let consumers trim the "
                        "streams (?maxlen=N), raise maxmemory, or free memory; will be retried [{}]",
                        endpoint, text)};
  if (code == "LOADING" || code == "MASTERDOWN" || code == "CLUSTERDOWN" || code == "READONLY" ||
      code == "MISCONF" || code == "NOREPLICAS" || (code == "ERR" && contains(text, "max number of clients")))
    return {ErrorClass::outage,
            fmt::format("Redis at {} refuses all writes right now ({}): wait for it to finish loading, for its "
                        "persistence or replicas to recover, or point the URL at the primary; will be retried "
                        "once it accepts writes",
                        endpoint, text)};
  // A script holding the server blocks every client: the whole server is
  // unavailable, not this message.
  if (code == "BUSY")
    return {ErrorClass::outage,
            fmt::format("Redis at {} is busy running a script ({}): it answers again when the script ends; will "
                        "be retried",
                        endpoint, text)};
  if (code == "TRYAGAIN" || code == "NOSCRIPT")
    return {ErrorClass::transient, fmt::format("Redis asked to try again ({}); will be retried", text)};
  if (code == "ERR")
    return {ErrorClass::permanent,
            fmt::format("Redis rejected the command for stream '{}' ({}): retrying cannot help; check the "
                        "destination name and the URL options; not retried",
                        destination, text)};
  return {ErrorClass::transient,
          fmt::format("Redis failed the command for stream '{}' ({}); will be retried", destination, text)};
}

}  // namespace txbox::redis::detail
