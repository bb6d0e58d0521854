#include "txbox/core/pg_array.hpp"

namespace txbox {

namespace {

template <typename T>
std::string number_array(std::span<const T> values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(values[i]);
  }
  out += '}';
  return out;
}

// Every element double-quoted with '"' and '\' escaped, so any text is safe.
template <typename Strings, typename IsNull, typename Text>
std::string text_array(const Strings& values, IsNull is_null, Text text) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    if (is_null(values[i])) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : text(values[i])) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

std::string pg_array(std::span<const int64_t> values) { return number_array(values); }
std::string pg_array(std::span<const int16_t> values) { return number_array(values); }

std::string pg_array(std::span<const std::string> values) {
  return text_array(values, [](const std::string&) { return false; },
                    [](const std::string& v) -> const std::string& { return v; });
}

std::string pg_array(std::span<const std::optional<std::string>> values) {
  return text_array(values, [](const std::optional<std::string>& v) { return !v; },
                    [](const std::optional<std::string>& v) -> const std::string& { return *v; });
}

}  // namespace txbox
