#include "conninfo.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <map>
#include <memory>
#include "txbox/core/error.hpp"

namespace txbox::relay {

std::string RelayConninfo::session_setup_sql() const {
  return fmt::format(
      "SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; SET tcp_keepalives_count = {}; "
      "SET tcp_user_timeout = {}",
      keepalive.idle_seconds, keepalive.interval_seconds, keepalive.count, keepalive.user_timeout_ms);
}

RelayConninfo relay_conninfo(const std::string& database_url, const std::string& application_name) {
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(database_url.c_str(), &error);
  if (parsed == nullptr) {
    std::string why = error != nullptr ? error : "out of memory";
    PQfreemem(error);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw txbox::UsageError(fmt::format(
        "the database URL is malformed ({}): use postgresql://user@host:port/database or "
        "'host=... dbname=...'",
        why));
  }
  std::map<std::string, std::string> given;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o)
    if (o->val != nullptr && o->val[0] != '\0') given[o->keyword] = o->val;
  PQconninfoFree(parsed);

  RelayConninfo out;
  auto number = [&](const char* key, int fallback) {
    auto it = given.find(key);
    if (it == given.end()) return fallback;
    try {
      return std::stoi(it->second);
    } catch (...) {
      return fallback;  // libpq reports its own error when connecting
    }
  };
  out.keepalive.idle_seconds = number("keepalives_idle", out.keepalive.idle_seconds);
  out.keepalive.interval_seconds = number("keepalives_interval", out.keepalive.interval_seconds);
  out.keepalive.count = number("keepalives_count", out.keepalive.count);
  out.keepalive.user_timeout_ms = number("tcp_user_timeout", out.keepalive.user_timeout_ms);

  const std::pair<const char*, std::string> defaults[] = {
      {"application_name", application_name},
      {"connect_timeout", "10"},
      {"keepalives", "1"},
      {"keepalives_idle", std::to_string(out.keepalive.idle_seconds)},
      {"keepalives_interval", std::to_string(out.keepalive.interval_seconds)},
      {"keepalives_count", std::to_string(out.keepalive.count)},
      {"tcp_user_timeout", std::to_string(out.keepalive.user_timeout_ms)},
  };
  const bool url = database_url.starts_with("postgresql://") || database_url.starts_with("postgres://");
  out.conninfo = database_url;
  for (const auto& [key, value] : defaults) {
    if (given.contains(key)) continue;
    if (url) {
      out.conninfo += out.conninfo.find('?') == std::string::npos ? '?' : '&';
      out.conninfo += fmt::format("{}={}", key, value);
    } else {
      if (!out.conninfo.empty()) out.conninfo += ' ';
      out.conninfo += fmt::format("{}='{}'", key, value);
    }
  }
  return out;
}

}  // namespace txbox::relay
