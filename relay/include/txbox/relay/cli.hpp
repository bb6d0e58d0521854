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

// A connection URL with its password replaced by "***", for messages.
std::string redact_url(std::string_view url);

// An exception text on one line (libpq messages span several).
std::string one_line(std::string_view text);

}  // namespace txbox::relay
