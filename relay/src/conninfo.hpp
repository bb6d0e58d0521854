#pragma once
// The connection string of the relay's PostgreSQL sessions: the user's URL
// plus defaults for what the relay needs and the user did not set.

#include <string>

#include "txbox/core/error.hpp"

namespace txbox::relay {

// TCP keepalive settings of a session, applied on both ends: by libpq on the
// relay's side (a dead server is noticed) and, with SET, by the server on its
// side — that is what frees a vanished relay host's lane locks in seconds
// instead of the server's default of about two hours.
struct KeepaliveSettings {
  int idle_seconds = 10;
  int interval_seconds = 5;
  int count = 3;
  int user_timeout_ms = 30000;  // unacknowledged data: give up after this
};

struct RelayConninfo {
  std::string conninfo;  // to connect with
  KeepaliveSettings keepalive;
  // SET statements for the server's side of the session.
  std::string session_setup_sql() const;
};

// Adds application_name, keepalives, keepalives_idle, keepalives_interval,
// keepalives_count, tcp_user_timeout and connect_timeout to `database_url`
// (a postgresql:// URL or a key=value string) unless it sets them; the
// keepalive values it does set are used for the server's side too.
// Throws txbox::UsageError when libpq cannot parse it (the message
// holds no password).
RelayConninfo relay_conninfo(const std::string& database_url, const std::string& application_name);

}  // namespace txbox::relay
