#pragma once
// The txbox schema: versioned, forward-only migrations (sql/NNNN_name.sql),
// embedded in the library so `txbox migrate` needs no files at run time.

#include <string>
#include <vector>

#include "txbox/core/error.hpp"
#include "txbox/core/schema_name.hpp"

namespace pqxx {
class connection_base;
}

namespace txbox::outbox {

struct Migration {
  int version;
  std::string name;  // from the file name: 0001_init.sql -> "init"
  std::string sql;
};

// All migrations known to this build, in version order, written for the
// default schema "txbox" (as in sql/; SchemaName::adapt() moves them).
const std::vector<Migration>& migrations();
int latest_schema_version();

// The schema is missing, too old, or newer than this build knows: kind
// unavailable, not retryable (the database must be migrated, or txbox
// upgraded, before trying again).
class SchemaError : public txbox::Error {
 public:
  explicit SchemaError(const std::string& what) : txbox::Error(ErrorKind::unavailable, what, Retryable{false}) {}
};

struct MigrateResult {
  std::vector<int> applied;  // versions applied by this call (empty: already up to date)
  int version = 0;           // schema version afterwards
};

// Applies the missing migrations in order, each in its own transaction, under
// an advisory lock so concurrent callers do not race. Safe to run twice.
// Throws SchemaError (changing nothing) when the database has applied a
// version this build does not know.
MigrateResult migrate(pqxx::connection_base& conn, const SchemaName& schema = SchemaName());

// A session advisory lock (single bigint key "txbox" + 1, one per database)
// held while migrating or changing the inbox's layout, so that neither
// overlaps another. Waits for it; releases it when destroyed.
class SchemaLock {
 public:
  explicit SchemaLock(pqxx::connection_base& conn);
  ~SchemaLock();
  SchemaLock(const SchemaLock&) = delete;
  SchemaLock& operator=(const SchemaLock&) = delete;

 private:
  pqxx::connection_base& conn_;
};

// Versions recorded in <schema>.schema_version (empty when never migrated).
std::vector<int> applied_versions(pqxx::connection_base& conn, const SchemaName& schema = SchemaName());

// Throws SchemaError with the fix ("run txbox migrate ...") unless the
// database has every migration this build needs.
void require_schema(pqxx::connection_base& conn, const SchemaName& schema = SchemaName());

}  // namespace txbox::outbox
