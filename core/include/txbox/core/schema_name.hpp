#pragma once
// The PostgreSQL schema that holds txbox's tables (outbox, dead letters,
// inbox, schema version) and its wake-up sequence and trigger functions.
// One database can hold several: each service its own (`orders`,
// `payments`), each with its own relay. Every component takes it the same
// way (library option, relay and CLI `--schema`, TOML `schema`, env
// TXBOX_SCHEMA); the default is "txbox".
//
// Identifiers cannot be bound as statement parameters, so the name is
// checked here once (lower-case letters, digits and '_', starting with a
// letter or '_', at most 48 characters, not pg_...) and then always used
// double-quoted; values never go into SQL text.

#include <string>
#include <string_view>

namespace txbox {

class SchemaName {
 public:
  static constexpr std::string_view kDefault = "txbox";
  static constexpr size_t kMaxLength = 48;  // leaves room for suffixes within NAMEDATALEN

  SchemaName() : name_(kDefault) {}
  // Throws txbox::UsageError naming the rule the name breaks.
  explicit SchemaName(std::string_view name);

  const std::string& name() const noexcept { return name_; }
  // "name", double-quoted for SQL text.
  std::string quoted() const;
  // "name"."object", double-quoted for SQL text.
  std::string qualify(std::string_view object) const;
  // The LISTEN/NOTIFY channel the outbox trigger wakes relays of this schema
  // on: "<name>_outbox" (txbox_outbox for the default schema).
  std::string wakeup_channel() const;
  // " --schema name" for a txbox command that must name this schema in a
  // hint ("run `txbox migrate --database-url URL{}`"); empty for the default.
  std::string command_flag() const;

  // `sql`, written for the default schema (txbox.outbox, the channel
  // 'txbox_outbox', CREATE SCHEMA IF NOT EXISTS txbox), moved into this
  // schema. txbox's own statements and migrations are written once that way
  // and adapted here, once, when they are prepared; returned unchanged for
  // the default schema.
  std::string adapt(std::string_view sql) const;

  bool operator==(const SchemaName&) const = default;

 private:
  std::string name_;
};

}  // namespace txbox
