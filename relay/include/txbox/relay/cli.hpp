#pragma once
// Entry points of the txbox-relay and txbox command-line programs. The
// binaries are thin main()s over these so tests can call them in-process.

#include <string>
#include <string_view>

namespace txbox::relay {

// txbox-relay: runs the relay. Exit codes: 0 done or stopped by a signal,
// 1 runtime error (database unreachable, schema missing), 2 bad usage/config.
int relay_main(int argc, char** argv);

// txbox: operations CLI (migrate, status).
int txbox_main(int argc, char** argv);

// `text` with the credentials of every URL in it (whatever sits between
// "://" and the last '@' of the URL) and every libpq password=... replaced
// by "***", for messages and logs.
std::string redact_url(std::string_view text);

// `text` with control characters escaped (\n, \r, \t, \xNN), so a logged
// value can never start a forged log line.
std::string escape_control(std::string_view text);

// An exception text on one line (libpq messages span several).
std::string one_line(std::string_view text);

}  // namespace txbox::relay
