#include "txbox/brokers/url.hpp"
#include "txbox/core/error.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace txbox::brokers {
namespace {

[[noreturn]] void fail(std::string_view url, std::string_view why) {
  throw txbox::UsageError(fmt::format(
      "malformed broker URL '{}': {}; expected scheme://[user[:password]@]host[:port][,host[:port]...][/path]"
      " such as kafka://127.0.0.1:9092",
      redact_broker_url(url), why));
}

std::string percent_decode(std::string_view url, std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (i + 2 >= in.size()) fail(url, "truncated %-escape");
      int value = 0;
      auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
      if (ec != std::errc{} || p != in.data() + i + 3) fail(url, "invalid %-escape");
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

}  // namespace

std::string redact_broker_url(std::string_view url) {
  const auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  const auto query = url.find('?', scheme + 3);
  const auto at = url.substr(0, query).rfind('@');
  if (at == std::string_view::npos || at < scheme + 3) return std::string(url);
  return fmt::format("{}***{}", url.substr(0, scheme + 3), url.substr(at));
}

std::string BrokerUrl::host_list(int default_port) const {
  std::string out;
  for (const auto& h : hosts) {
    if (!out.empty()) out += ',';
    out += fmt::format("{}:{}", h.host, h.port ? h.port : default_port);
  }
  return out;
}

BrokerUrl parse_broker_url(std::string_view url) {
  BrokerUrl result;
  result.original = std::string(url);
  result.redacted = redact_broker_url(url);
  auto sep = url.find("://");
  if (url.empty()) fail(url, "it is empty");
  if (sep == std::string_view::npos || sep == 0) fail(url, "missing scheme (such as kafka://)");
  result.scheme = std::string(url.substr(0, sep));
  std::transform(result.scheme.begin(), result.scheme.end(), result.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (char c : result.scheme)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.')
      fail(url, "the scheme has invalid characters");
  std::string_view rest = url.substr(sep + 3);

  if (auto q = rest.find('?'); q != std::string_view::npos) {
    std::string_view query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    while (!query.empty()) {
      auto amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
      if (pair.empty()) continue;
      auto eq = pair.find('=');
      if (eq == std::string_view::npos || eq == 0) fail(url, fmt::format("query parameter '{}' is not name=value", pair));
      result.query[percent_decode(url, pair.substr(0, eq))] = percent_decode(url, pair.substr(eq + 1));
    }
  }
  // The credentials end at the LAST '@': a password with an unencoded '@'
  // or '/' is still taken whole (and never shows up as a host or a path).
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = userinfo.find(':');
    result.user = percent_decode(url, userinfo.substr(0, colon));
    if (colon != std::string_view::npos) result.password = percent_decode(url, userinfo.substr(colon + 1));
  }
  std::string_view authority = rest;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    result.path = percent_decode(url, rest.substr(slash + 1));
  }
  if (authority.empty()) fail(url, "no host given");
  while (!authority.empty()) {
    auto comma = authority.find(',');
    std::string_view hp = authority.substr(0, comma);
    authority = comma == std::string_view::npos ? std::string_view{} : authority.substr(comma + 1);
    if (hp.empty()) fail(url, "empty host in the host list");
    HostPort host;
    std::string_view port_text;
    if (hp.front() == '[') {  // [::1]:9092
      auto close = hp.find(']');
      if (close == std::string_view::npos) fail(url, "unterminated [IPv6] address");
      host.host = std::string(hp.substr(1, close - 1));
      if (close + 1 < hp.size()) {
        if (hp[close + 1] != ':') fail(url, "expected ':' after ]");
        port_text = hp.substr(close + 2);
      }
    } else {
      auto colon = hp.find(':');
      host.host = std::string(hp.substr(0, colon));
      if (colon != std::string_view::npos) port_text = hp.substr(colon + 1);
      if (colon != std::string_view::npos && port_text.empty()) fail(url, fmt::format("empty port after '{}:'", host.host));
    }
    if (host.host.empty()) fail(url, "empty host name");
    if (!port_text.empty()) {
      auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), host.port);
      if (ec != std::errc{} || p != port_text.data() + port_text.size() || host.port <= 0 || host.port > 65535)
        fail(url, fmt::format("port '{}' is not a number from 1 to 65535", port_text));
    }
    result.hosts.push_back(std::move(host));
  }
  return result;
}

}  // namespace txbox::brokers
