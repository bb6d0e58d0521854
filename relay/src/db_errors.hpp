#pragma once
// What the relay does about a PostgreSQL error, by SQLSTATE. Pure.

#include <string_view>

namespace txbox::relay {

enum class DbFailure {
  // The session is gone or unusable (connection lost, server shutting down,
  // a read-only standby after a failover): reconnect with backoff.
  reconnect,
  // The statement failed but the session is fine (cancelled, statement
  // timeout, deadlock, serialization failure, lock timeout, out of
  // resources, I/O error): retry with backoff on the same session.
  retry,
  // Retrying cannot help (schema missing, permission denied, a bug): stop
  // the relay with the error.
  fatal,
};

DbFailure classify_sqlstate(std::string_view sqlstate) noexcept;

const char* to_string(DbFailure failure) noexcept;

}  // namespace txbox::relay
