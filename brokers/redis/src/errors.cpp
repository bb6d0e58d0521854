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
    case Failure::Kind::io:
      return {ErrorClass::transient, true,
              fmt::format("connection to Redis at {} failed ({}): check that the server runs and is reachable; "
                          "will be retried",
                          endpoint, failure.text)};
    case Failure::Kind::timeout:
      return {ErrorClass::transient, true,
              fmt::format("Redis at {} did not answer in time ({}): the server is overloaded or unreachable; "
                          "will be retried",
                          endpoint, failure.text)};
    case Failure::Kind::reply:
      break;
  }
  const std::string_view text = failure.text;
  const std::string_view code = code_of(text);
  if (code == "WRONGTYPE")
    return {ErrorClass::permanent, false,
            fmt::format("key '{}' holds a value that is not a stream: choose another destination, or delete "
                        "the key [{}]",
                        destination, text)};
  if (code == "NOAUTH" || code == "WRONGPASS")
    return {ErrorClass::permanent, false,
            fmt::format("Redis at {} rejected the credentials: put the right password in the URL "
                        "(redis://:password@host:port or redis://user:password@host:port) [{}]",
                        endpoint, text)};
  if (code == "NOPERM")
    return {ErrorClass::permanent, false,
            fmt::format("the Redis user may not write stream '{}': grant it the commands EVALSHA, SCRIPT, SET, "
                        "XADD, TYPE, DEL and the keys '{}' and 'txbox:dedup:*' (ACL SETUSER) [{}]",
                        destination, destination, text)};
  if (code == "OOM")
    return {ErrorClass::transient, true,
            fmt::format("Redis at {} is out of memory (maxmemory reached, writes refused): let consumers trim the "
                        "streams (?maxlen=N), raise maxmemory, or free memory; will be retried [{}]",
                        endpoint, text)};
  if (code == "LOADING" || code == "BUSY" || code == "MASTERDOWN" || code == "CLUSTERDOWN" ||
      code == "READONLY" || code == "MISCONF" || code == "NOREPLICAS" ||
      (code == "ERR" && contains(text, "max number of clients")))
    return {ErrorClass::transient, true,
            fmt::format("Redis at {} cannot take writes right now ({}): wait for it to finish loading, for a "
                        "primary to be available, or point the URL at the primary; will be retried",
                        endpoint, text)};
  if (code == "TRYAGAIN" || code == "NOSCRIPT")
    return {ErrorClass::transient, false, fmt::format("Redis asked to try again ({}); will be retried", text)};
  if (code == "ERR")
    return {ErrorClass::permanent, false,
            fmt::format("Redis rejected the command for stream '{}' ({}): retrying cannot help; check the "
                        "destination name and the URL options",
                        destination, text)};
  return {ErrorClass::transient, false,
          fmt::format("Redis failed the command for stream '{}' ({}); will be retried", destination, text)};
}

}  // namespace txbox::redis::detail
