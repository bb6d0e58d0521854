#include "txbox/outbox/schema.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <pqxx/pqxx>

namespace txbox::outbox {
namespace {
// pg_advisory_lock key held while migrating ("txbox" + 1).
constexpr long long kMigrationLockKey = 0x7478626f7801LL;
}  // namespace

int latest_schema_version() { return migrations().empty() ? 0 : migrations().back().version; }

std::vector<int> applied_versions(pqxx::connection_base& conn, const SchemaName& schema) {
  pqxx::nontransaction tx(conn);
  auto exists = tx.exec_params1("SELECT to_regclass($1) IS NOT NULL", schema.qualify("schema_version"))[0].as<bool>();
  std::vector<int> versions;
  if (!exists) return versions;
  for (const auto& row : tx.exec(schema.adapt("SELECT version FROM txbox.schema_version ORDER BY version")))
    versions.push_back(row[0].as<int>());
  return versions;
}

SchemaLock::SchemaLock(pqxx::connection_base& conn) : conn_(conn) {
  pqxx::nontransaction tx(conn_);
  tx.exec_params("SELECT pg_advisory_lock($1)", kMigrationLockKey);
}

SchemaLock::~SchemaLock() {
  try {
    pqxx::nontransaction tx(conn_);
    tx.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
  } catch (...) {  // the lock dies with the session anyway
  }
}

MigrateResult migrate(pqxx::connection_base& conn, const SchemaName& schema) {
  SchemaLock lock(conn);
  auto applied = applied_versions(conn, schema);
  std::vector<int> unknown;
  for (int v : applied)
    if (std::none_of(migrations().begin(), migrations().end(),
                     [v](const Migration& m) { return m.version == v; }))
      unknown.push_back(v);
  if (!unknown.empty())
    throw SchemaError(fmt::format(
        "the database's txbox schema '{}' has version(s) {} applied, which this txbox build does "
        "not know (it knows up to {}); it was migrated by a newer txbox: use that version, nothing "
        "was changed",
        schema.name(), fmt::join(unknown, ", "), latest_schema_version()));

  MigrateResult result;
  for (const auto& m : migrations()) {
    if (std::find(applied.begin(), applied.end(), m.version) != applied.end()) continue;
    pqxx::work tx(conn);
    try {
      tx.exec(schema.adapt(m.sql));
    } catch (const pqxx::sql_error& e) {
      throw SchemaError(
          fmt::format("migration {:04}_{} failed and was rolled back: {}", m.version, m.name,
                      e.what()));
    }
    tx.commit();
    result.applied.push_back(m.version);
  }
  result.version = latest_schema_version();
  return result;
}

void require_schema(pqxx::connection_base& conn, const SchemaName& schema) {
  auto applied = applied_versions(conn, schema);
  const std::string flag = schema.command_flag();
  std::vector<int> missing;
  for (const auto& m : migrations())
    if (std::find(applied.begin(), applied.end(), m.version) == applied.end())
      missing.push_back(m.version);
  if (applied.empty())
    throw SchemaError(fmt::format(
        "database '{}' has no txbox schema '{}': apply the migrations first with `txbox migrate "
        "--database-url URL{}`{}",
        conn.dbname(), schema.name(), flag,
        flag.empty() ? " (or psql -f sql/*.sql in order)" : ""));
  if (!missing.empty())
    throw SchemaError(fmt::format(
        "database '{}' lacks txbox migration(s) {} in schema '{}': run `txbox migrate --database-url URL{}`",
        conn.dbname(), fmt::join(missing, ", "), schema.name(), flag));
  int newest = *std::max_element(applied.begin(), applied.end());
  if (newest > latest_schema_version())
    throw SchemaError(fmt::format(
        "database '{}' has txbox schema version {}, newer than this build knows ({}): upgrade "
        "txbox",
        conn.dbname(), newest, latest_schema_version()));
}

}  // namespace txbox::outbox
