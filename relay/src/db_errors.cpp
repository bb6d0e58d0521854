#include "db_errors.hpp"

namespace txbox::relay {

DbFailure classify_sqlstate(std::string_view state) noexcept {
  if (state.size() != 5) return DbFailure::reconnect;  // no SQLSTATE: the connection broke
  if (state == "57P04") return DbFailure::fatal;       // database_dropped
  if (state.starts_with("08")) return DbFailure::reconnect;   // connection exception
  if (state.starts_with("57P")) return DbFailure::reconnect;  // shutdown, crash, cannot connect now
  if (state == "25006") return DbFailure::reconnect;          // read-only transaction: a standby
  if (state == "57014") return DbFailure::retry;              // query_canceled, statement_timeout
  if (state.starts_with("40")) return DbFailure::retry;       // serialization failure, deadlock
  if (state == "55P03") return DbFailure::retry;              // lock_not_available (lock_timeout)
  if (state == "55006") return DbFailure::retry;              // object_in_use
  if (state.starts_with("53")) return DbFailure::retry;       // disk full, out of memory, too many connections
  if (state.starts_with("58")) return DbFailure::retry;       // system error, I/O error
  if (state == "XX000") return DbFailure::retry;              // internal error
  return DbFailure::fatal;
}

const char* to_string(DbFailure failure) noexcept {
  switch (failure) {
    case DbFailure::reconnect: return "reconnect";
    case DbFailure::retry: return "retry";
    case DbFailure::fatal: return "fatal";
  }
  return "unknown";
}

}  // namespace txbox::relay
