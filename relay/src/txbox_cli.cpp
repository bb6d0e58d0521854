#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <pqxx/pqxx>

#include "cli_common.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/relay/cli.hpp"

namespace txbox::relay {

int txbox_main(int argc, char** argv) {
  CLI::App app{"txbox: operations on a txbox database (schema migrations, outbox status)"};
  app.set_version_flag("--version", "txbox 0.1.0");
  app.require_subcommand(1);
  std::string database_url;
  auto add_database = [&](CLI::App* command) {
    command->add_option("--database-url", database_url, "PostgreSQL connection URL")
        ->envname("TXBOX_DATABASE_URL")
        ->required();
  };
  auto* migrate = app.add_subcommand(
      "migrate", "apply the txbox schema migrations this build knows, in order; safe to run twice");
  add_database(migrate);
  auto* status = app.add_subcommand("status", "show the schema version and what waits in the outbox");
  add_database(status);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "txbox: error: %s; see txbox --help\n", one_line(e.what()).c_str());
    return cli::kExitUsage;
  }
  return cli::guarded("txbox", database_url, [&] {
    pqxx::connection conn(database_url);
    if (migrate->parsed()) {
      auto result = outbox::migrate(conn);
      if (result.applied.empty()) {
        std::printf("txbox schema already at version %d; nothing to do\n", result.version);
      } else {
        for (int version : result.applied)
          for (const auto& m : outbox::migrations())
            if (m.version == version) std::printf("applied %04d_%s\n", m.version, m.name.c_str());
        std::printf("txbox schema at version %d\n", result.version);
      }
      return cli::kExitOk;
    }
    outbox::require_schema(conn);
    pqxx::read_transaction tx(conn);
    auto row = tx.exec1(
        "SELECT count(*), count(*) FILTER (WHERE attempts > 0), min(created_at)::text, "
        "(SELECT max(version) FROM txbox.schema_version) FROM txbox.outbox");
    std::printf("schema version: %d\noutbox rows: %lld\nrows being retried: %lld\noldest row: %s\n",
                row[3].as<int>(), row[0].as<long long>(), row[1].as<long long>(),
                row[2].is_null() ? "-" : row[2].c_str());
    return cli::kExitOk;
  });
}

}  // namespace txbox::relay
