#pragma once
// What the two command-line programs share: logging setup and turning any
// exception into one clear error line and an exit code.

#include <functional>
#include <string>

namespace txbox::relay::cli {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;  // environment problem: database down, schema missing
constexpr int kExitUsage = 2;    // bad flags, URL or config

// Logs to stderr as "<time> <level> <program>: <message>".
void setup_logging(const std::string& program, const std::string& level);

// Runs `body`; on an exception prints "<program>: error: <what>" (one line,
// secrets redacted, with the fix) and returns the matching exit code.
int guarded(const std::string& program, const std::string& database_url,
            const std::function<int()>& body);

}  // namespace txbox::relay::cli
