#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "txbox/core/error.hpp"
#include "txbox/core/version.hpp"
#include "txbox/outbox/dead_letters.hpp"
#include "txbox/outbox/inbox_partitions.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/relay/cli.hpp"

namespace txbox::relay {
namespace {

// Length of a UTF-8 sequence starting with `lead`, 0 when it cannot start one.
size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    auto lead = static_cast<unsigned char>(s[i]);
    size_t n = utf8_length(lead);
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    auto second = static_cast<unsigned char>(s[i + 1 < s.size() ? i + 1 : i]);
    if (lead == 0xe0 && second < 0xa0) return false;  // overlong
    if (lead == 0xed && second > 0x9f) return false;  // surrogate
    if (lead == 0xf0 && second < 0x90) return false;  // overlong
    if (lead == 0xf4 && second > 0x8f) return false;  // > U+10FFFF
    i += n;
  }
  return true;
}

// Shown as text: valid UTF-8 without control characters other than newline,
// tab and carriage return (so it cannot garble the terminal).
bool printable_text(std::string_view s) {
  if (!valid_utf8(s)) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t' && c != '\r') || u == 0x7f) return false;
  }
  return true;
}

std::string hex(std::string_view bytes) {
  std::string out = "\\x";
  for (char c : bytes) out += fmt::format("{:02x}", static_cast<unsigned char>(c));
  return out;
}

// Control characters (newlines included) become spaces, runs of them one.
std::string flat(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Control characters other than newline and tab become '?'.
std::string safe(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out += ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) ? '?' : c;
  }
  return out;
}

size_t width(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return n;
}

// At most `max` characters, "..." marking a cut; never splits a UTF-8 sequence.
std::string truncated(std::string_view s, size_t max) {
  if (width(s) <= max) return std::string(s);
  std::string out;
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    bool lead = (static_cast<unsigned char>(s[i]) & 0xc0) != 0x80;
    if (lead && chars++ == max - 3) break;
    out += s[i];
  }
  return out + "...";
}

void print_table(const std::vector<outbox::DeadLetter>& rows) {
  std::vector<std::vector<std::string>> table;
  table.push_back({"ID", "DEAD AT", "DESTINATION", "KEY", "ATTEMPTS", "ERROR CLASS", "LAST ERROR",
                   "MESSAGE ID"});
  for (const auto& d : rows) {
    // 2024-05-01T12:00:00.123456Z -> 2024-05-01T12:00:00Z
    std::string dead_at = d.dead_at.size() > 19 ? d.dead_at.substr(0, 19) + "Z" : d.dead_at;
    table.push_back({std::to_string(d.id), dead_at, truncated(flat(d.destination), 40),
                     d.key ? truncated(flat(*d.key), 30) : "-", std::to_string(d.attempts),
                     d.error_class, truncated(flat(d.last_error), 80), d.message_id});
  }
  std::vector<size_t> widths(table.front().size(), 0);
  for (const auto& row : table)
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], width(row[c]));
  for (const auto& row : table) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(widths[c] - width(row[c]) + 2, ' ');
    }
    fmt::print("{}\n", line);
  }
}

void print_dead_letter(const outbox::DeadLetter& d) {
  fmt::print("id:          {}\n", d.id);
  fmt::print("outbox id:   {}\n", d.outbox_id);
  fmt::print("message id:  {}\n", d.message_id);
  fmt::print("destination: {}\n", safe(d.destination));
  fmt::print("key:         {}\n", d.key ? safe(*d.key) : "(none)");
  fmt::print("created at:  {}\n", d.created_at);
  fmt::print("dead at:     {}\n", d.dead_at);
  fmt::print("attempts:    {}\n", d.attempts);
  fmt::print("error class: {}\n", d.error_class);
  fmt::print("last error:  {}\n", safe(d.last_error));
  fmt::print("headers:     {}\n", d.headers_json);
  if (d.payload.empty()) {
    fmt::print("payload:     (empty, 0 bytes)\n");
  } else if (printable_text(d.payload)) {
    fmt::print("payload (text, {} bytes):\n{}\n", d.payload.size(), d.payload);
  } else {
    fmt::print("payload (hex, {} bytes, not UTF-8 text):\n{}\n", d.payload.size(), hex(d.payload));
  }
}

const char* plural(size_t n) { return n == 1 ? "dead letter" : "dead letters"; }

}  // namespace

int txbox_main(int argc, char** argv) {
  CLI::App app{
      "txbox: operations on a txbox database (schema migrations, outbox status, dead letters, inbox "
      "partitions)"};
  app.set_version_flag("--version", std::string("txbox ") + txbox::kVersion);
  app.require_subcommand(1);
  std::string database_url, schema_name(SchemaName::kDefault);
  auto add_database = [&](CLI::App* command) {
    command->add_option("--database-url", database_url, "PostgreSQL connection URL")
        ->envname("TXBOX_DATABASE_URL")
        ->required();
    command->add_option("--schema", schema_name, "the txbox schema to work on (default txbox)")
        ->envname("TXBOX_SCHEMA");
  };
  auto* migrate = app.add_subcommand(
      "migrate", "apply the txbox schema migrations this build knows, in order; safe to run twice");
  add_database(migrate);
  auto* status = app.add_subcommand(
      "status", "show the schema version, what waits in the outbox and the dead-letter count");
  add_database(status);

  auto* dead = app.add_subcommand(
      "dead-letters",
      "inspect, replay and purge the dead_letters table (rows the relay gave up on)");
  dead->require_subcommand(1);

  std::optional<std::string> destination;
  auto* list = dead->add_subcommand("list", "list dead letters, oldest id first");
  add_database(list);
  list->add_option("--destination", destination, "only dead letters for this destination");
  int limit = 100;
  list->add_option("--limit", limit, "show at most this many (default 100)")
      ->check(CLI::Range(1, 1000000));
  int64_t after_id = 0;
  list->add_option("--after-id", after_id, "only dead letters with a larger id (paging)");

  auto* show = dead->add_subcommand("show", "show every field of one dead letter, payload included");
  add_database(show);
  int64_t show_id = 0;
  show->add_option("id", show_id, "dead-letter id (from `txbox dead-letters list`)")->required();

  auto* replay = dead->add_subcommand(
      "replay",
      "move dead letters back into the outbox (same message id; after their key's current rows)");
  add_database(replay);
  std::vector<int64_t> replay_ids;
  replay->add_option("ids", replay_ids, "dead-letter ids to replay");
  bool replay_all = false;
  replay->add_flag("--all", replay_all, "replay every dead letter (of --destination, when given)");
  replay->add_option("--destination", destination, "with --all: only this destination");

  auto* purge = dead->add_subcommand("purge", "delete dead letters that died long enough ago");
  add_database(purge);
  std::string older_than;
  purge->add_option("--older-than", older_than,
                    "age by dead_at: a whole number and s, m, h, d or w (45s, 15m, 12h, 30d, 2w)")
      ->required();

  auto* inbox = app.add_subcommand("inbox", "manage the inbox table's layout");
  inbox->require_subcommand(1);
  auto* partition = inbox->add_subcommand(
      "partition",
      "partition the inbox by time (the first run converts it), create the partitions ahead and drop "
      "the expired ones; idempotent, run it from cron (docs/inbox.md)");
  add_database(partition);
  outbox::InboxPartitionOptions partitioning;
  partition->add_option("--interval", partitioning.interval,
                        "time each partition covers, a PostgreSQL interval (default '1 day'; fixed by the "
                        "first run)");
  partition->add_option("--retention", partitioning.retention,
                        "the dedup window: partitions wholly older than this are dropped (default '7 days')");
  partition->add_option("--ahead", partitioning.ahead,
                        "intervals beyond the current one to create partitions for (default 3)")
      ->check(CLI::Range(1, 10000));

  auto usage_error = [](const std::string& message, const std::string& help) {
    std::fprintf(stderr, "txbox: error: %s; see %s --help\n", one_line(message).c_str(),
                 help.c_str());
    return cli::kExitUsage;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what(), "txbox");
  }

  std::chrono::seconds purge_age{0};
  if (replay->parsed()) {
    if (replay_all && !replay_ids.empty())
      return usage_error("give either dead-letter ids or --all, not both",
                         "txbox dead-letters replay");
    if (!replay_all && replay_ids.empty())
      return usage_error("nothing to replay: give dead-letter ids or --all",
                         "txbox dead-letters replay");
    if (!replay_all && destination)
      return usage_error("--destination goes with --all (ids already name the dead letters)",
                         "txbox dead-letters replay");
  }
  if (purge->parsed()) {
    try {
      purge_age = outbox::parse_duration(older_than);
    } catch (const txbox::Error& e) {
      return usage_error(fmt::format("--older-than: {}", e.what()), "txbox dead-letters purge");
    }
  }
  std::optional<SchemaName> parsed_schema;
  try {
    parsed_schema.emplace(schema_name);
  } catch (const txbox::Error& e) {
    return usage_error(fmt::format("--schema: {}", e.what()), "txbox");
  }
  const SchemaName& schema = *parsed_schema;

  return cli::guarded("txbox", database_url, [&] {
    pqxx::connection conn(database_url);
    if (migrate->parsed()) {
      auto result = outbox::migrate(conn, schema);
      if (result.applied.empty()) {
        std::printf("txbox schema %s already at version %d; nothing to do\n", schema.name().c_str(),
                    result.version);
      } else {
        for (int version : result.applied)
          for (const auto& m : outbox::migrations())
            if (m.version == version) std::printf("applied %04d_%s\n", m.version, m.name.c_str());
        std::printf("txbox schema %s at version %d\n", schema.name().c_str(), result.version);
      }
      return cli::kExitOk;
    }
    if (partition->parsed()) {
      auto report = outbox::partition_inbox(conn, schema, partitioning);
      if (report.converted)
        fmt::print("converted {} into a table partitioned by processed_at (the old table is its first partition)\n",
                   schema.qualify("inbox"));
      for (const auto& p : report.created) fmt::print("created partition {}\n", p);
      for (const auto& p : report.dropped) fmt::print("dropped expired partition {}\n", p);
      fmt::print("inbox partitions of {} up to {}; dedup window (retention) {}\n", report.interval,
                 report.covered_until, report.retention);
      return cli::kExitOk;
    }
    outbox::require_schema(conn, schema);
    if (status->parsed()) {
      pqxx::read_transaction tx(conn);
      auto row = tx.exec1(schema.adapt(
          "SELECT count(*), count(*) FILTER (WHERE attempts > 0), min(created_at)::text, "
          "(SELECT max(version) FROM txbox.schema_version), "
          "(SELECT count(*) FROM txbox.dead_letters) FROM txbox.outbox"));
      std::printf(
          "schema version: %d\noutbox rows: %lld\nrows being retried: %lld\noldest row: %s\n"
          "dead letters: %lld\n",
          row[3].as<int>(), row[0].as<long long>(), row[1].as<long long>(),
          row[2].is_null() ? "-" : row[2].c_str(), row[4].as<long long>());
      fmt::print("inbox: {}\n", outbox::describe_inbox_layout(tx, schema));
      return cli::kExitOk;
    }
    if (list->parsed()) {
      pqxx::read_transaction tx(conn);
      outbox::DeadLetterFilter filter;
      filter.destination = destination;
      filter.limit = limit;
      filter.after_id = after_id;
      auto rows = outbox::list_dead_letters(tx, filter, schema);
      if (rows.empty()) {
        std::printf("no dead letters\n");
        return cli::kExitOk;
      }
      print_table(rows);
      if (static_cast<int>(rows.size()) == limit)
        fmt::print("(first {} shown; see more with --after-id {})\n", limit, rows.back().id);
      return cli::kExitOk;
    }
    if (show->parsed()) {
      pqxx::read_transaction tx(conn);
      auto d = outbox::find_dead_letter(tx, show_id, schema);
      if (!d)
        throw txbox::Error(ErrorKind::permanent, fmt::format("no dead letter with id {}", show_id),
                           "see `txbox dead-letters list`");
      print_dead_letter(*d);
      return cli::kExitOk;
    }
    if (replay->parsed()) {
      pqxx::work tx(conn);
      size_t n = 0;
      if (replay_all) {
        n = outbox::replay_all_dead_letters(tx, destination, schema);
      } else {
        n = outbox::replay_dead_letters(tx, replay_ids, schema);
      }
      tx.commit();
      fmt::print("replayed {} {} into the outbox\n", n, plural(n));
      return cli::kExitOk;
    }
    if (purge->parsed()) {
      pqxx::work tx(conn);
      size_t n = outbox::purge_dead_letters(tx, purge_age, schema);
      tx.commit();
      fmt::print("purged {} {} older than {}\n", n, plural(n), older_than);
      return cli::kExitOk;
    }
    throw txbox::Error(ErrorKind::internal, "txbox: no subcommand handled");
  });
}

}  // namespace txbox::relay
