#pragma once
// The txbox schema: versioned, forward-only migrations (sql/NNNN_name.sql),
// embedded in the library so `txbox migrate` needs no files at run time.

#include <stdexcept>
#include <string>
#include <vector>

namespace pqxx {
class connection_base;
}

namespace txbox::outbox {

struct Migration {
  int version;
  std::string name;  // from the file name: 0001_init.sql -> "init"
  std::string sql;
};

// All migrations known to this build, in version order.
const std::vector<Migration>& migrations();
int latest_schema_version();

// The schema is missing, too old, or newer than this build knows.
class SchemaError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct MigrateResult {
  std::vector<int> applied;  // versions applied by this call (empty: already up to date)
  int version = 0;           // schema version afterwards
};

// Applies the missing migrations in order, each in its own transaction, under
// an advisory lock so concurrent callers do not race. Safe to run twice.
// Throws SchemaError (changing nothing) when the database has applied a
// version this build does not know.
MigrateResult migrate(pqxx::connection_base& conn);

// Versions recorded in txbox.schema_version (empty when never migrated).
std::vector<int> applied_versions(pqxx::connection_base& conn);

// Throws SchemaError with the fix ("run txbox migrate ...") unless the
// database has every migration this build needs.
void require_schema(pqxx::connection_base& conn);

}  // namespace txbox::outbox
