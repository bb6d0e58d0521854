#include <charconv>
#include <string>

#include "txbox/core/error.hpp"
#include "txbox/metrics/http_endpoint.hpp"

namespace txbox::metrics {

ListenAddress parse_listen_address(std::string_view text, std::string_view what) {
  auto fail = [&](std::string_view why) {
    return txbox::UsageError(std::string(what) + " '" + std::string(text) + "': " + std::string(why) +
                             "; give HOST:PORT, e.g. 127.0.0.1:9464, 0.0.0.0:9464 (every interface) or [::1]:9464");
  };
  ListenAddress address;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw fail("an IPv6 address in brackets must be followed by :PORT");
    address.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw fail("no port");
    if (text.substr(0, colon).find(':') != std::string_view::npos)
      throw fail("an IPv6 address needs brackets");
    address.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (address.host.empty()) throw fail("no host");
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), address.port);
  if (port.empty() || error != std::errc() || end != port.data() + port.size() || address.port < 0 ||
      address.port > 65535)
    throw fail("the port must be a number from 0 to 65535");
  return address;
}

}  // namespace txbox::metrics
