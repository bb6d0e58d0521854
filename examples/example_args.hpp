#pragma once
// What the example programs share: the database they work on (its URL from
// --database-url or TXBOX_DATABASE_URL) and the tables of their own data,
// which each creates if missing (the outbox and inbox tables come from
// `txbox migrate`).

#include <CLI/CLI.hpp>

#include <pqxx/pqxx>
#include <string>

namespace example {

inline void add_database_url_option(CLI::App& app, std::string& database_url) {
  app.add_option("--database-url", database_url, "PostgreSQL URL")->required()->envname("TXBOX_DATABASE_URL");
}

// Runs `create_table_sql` (a CREATE TABLE IF NOT EXISTS) in a transaction
// of its own.
inline void create_table(pqxx::connection& conn, const std::string& create_table_sql) {
  pqxx::work tx(conn);
  tx.exec0(create_table_sql);
  tx.commit();
}

// The same on a connection of its own.
inline void create_table(const std::string& database_url, const std::string& create_table_sql) {
  pqxx::connection conn(database_url);
  create_table(conn, create_table_sql);
}

}  // namespace example
