#pragma once
// The time-partitioned inbox (docs/inbox.md): `txbox inbox partition`.
//
// The first call converts <schema>.inbox into a table partitioned by range
// of processed_at (the old table becomes its first partition) and replaces
// <schema>.inbox_claim() with the version that finds duplicates across
// partitions. Every call then creates the partitions for the next `ahead`
// intervals and drops the partitions wholly older than the retention.
// Idempotent: meant to run from cron, more often than once per interval.

#include <optional>
#include <string>
#include <vector>

#include "txbox/core/schema_name.hpp"

namespace pqxx {
class connection_base;
class transaction_base;
}

namespace txbox::outbox {

struct InboxPartitionOptions {
  // PostgreSQL intervals ("1 day", "6 hours"). Unset: what the inbox was
  // partitioned with, or 1 day and 7 days the first time. The interval is
  // fixed at the conversion; the retention may change at any call.
  std::optional<std::string> interval;
  std::optional<std::string> retention;
  int ahead = 3;  // intervals to create partitions for beyond the current one
};

struct InboxPartitionReport {
  bool converted = false;             // this call converted the plain table
  std::string interval, retention;    // in effect, as PostgreSQL prints them
  std::vector<std::string> created;   // "name [from, to)"
  std::vector<std::string> dropped;   // "name [.., to)"
  std::string covered_until;          // end of the last partition
};

// Throws txbox::UsageError for a malformed or unusable interval/retention/
// ahead, txbox::ConfigError when the schema has no inbox, SchemaError when
// migration 0004 is missing. Takes SchemaLock, so it never overlaps a
// migration or another call.
InboxPartitionReport partition_inbox(pqxx::connection_base& conn, const SchemaName& schema,
                                     const InboxPartitionOptions& options);

// One line for `txbox status`: "plain table", or "partitioned by 1 day,
// retention 7 days, 11 partitions up to 2026-12-03 00:00:00+00".
std::string describe_inbox_layout(pqxx::transaction_base& tx, const SchemaName& schema);

}  // namespace txbox::outbox
