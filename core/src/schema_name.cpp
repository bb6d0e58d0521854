#include "txbox/core/schema_name.hpp"

#include <initializer_list>

#include "txbox/core/error.hpp"

namespace txbox {

namespace {
constexpr const char* kRule =
    "use lower-case letters, digits and '_', starting with a letter or '_', at most 48 characters, "
    "for example --schema orders";

// Concatenation without operator+ on temporaries: g++ 12 at -O3 reports a
// false -Wrestrict inside std::string's operator+ (a Release build).
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto part : parts) out += part;
  return out;
}

bool valid_char(char c, bool first) {
  if (c == '_' || (c >= 'a' && c <= 'z')) return true;
  return !first && c >= '0' && c <= '9';
}
}  // namespace

SchemaName::SchemaName(std::string_view name) : name_(name) {
  if (name.empty()) throw UsageError("the txbox schema name is empty", kRule);
  if (name.size() > kMaxLength)
    throw UsageError(concat({"the txbox schema name '", name.substr(0, kMaxLength), "...' is too long"}), kRule);
  for (size_t i = 0; i < name.size(); ++i)
    if (!valid_char(name[i], i == 0))
      throw UsageError(
          concat({"the txbox schema name '", name, "' has a character PostgreSQL would need quoting for"}), kRule);
  if (name.substr(0, 3) == "pg_")
    throw UsageError(concat({"the txbox schema name '", name, "' starts with pg_, which PostgreSQL reserves"}),
                     kRule);
}

std::string SchemaName::quoted() const { return concat({"\"", name_, "\""}); }

std::string SchemaName::qualify(std::string_view object) const {
  return concat({"\"", name_, "\".\"", object, "\""});
}

std::string SchemaName::wakeup_channel() const { return concat({name_, "_outbox"}); }

std::string SchemaName::command_flag() const { return name_ == kDefault ? "" : concat({" --schema ", name_}); }

std::string SchemaName::adapt(std::string_view sql) const {
  if (name_ == kDefault) return std::string(sql);
  auto identifier_char = [](char c) {
    return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  constexpr std::string_view kQualifier = "txbox.", kChannel = "'txbox_outbox'",
                             kCreate = "SCHEMA IF NOT EXISTS txbox;";
  std::string out;
  out.reserve(sql.size() + sql.size() / 8);
  for (size_t i = 0; i < sql.size();) {
    std::string_view rest = sql.substr(i);
    bool boundary = i == 0 || !identifier_char(sql[i - 1]);
    if (boundary && rest.starts_with(kQualifier)) {
      out += concat({quoted(), "."});
      i += kQualifier.size();
    } else if (rest.starts_with(kChannel)) {
      out += concat({"'", wakeup_channel(), "'"});
      i += kChannel.size();
    } else if (rest.starts_with(kCreate)) {
      out += concat({"SCHEMA IF NOT EXISTS ", quoted(), ";"});
      i += kCreate.size();
    } else {
      out += sql[i++];
    }
  }
  return out;
}

}  // namespace txbox
