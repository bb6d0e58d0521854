#pragma once
// What the two command-line programs share: logging setup and turning any
// exception into one clear error line and an exit code.

#include <functional>
#include <string>

#include "txbox/core/error.hpp"

namespace txbox::relay::cli {

// Exit codes: txbox::exit_code() of the error's kind (txbox/core/error.hpp):
// 0 ok, 1 a failure of the environment (database down, schema missing),
// 2 bad flags, URL or config.
using txbox::kExitFailure;
using txbox::kExitOk;
using txbox::kExitUsage;

// Logs to stderr as "<time> <level> <program>: <message>".
void setup_logging(const std::string& program, const std::string& level);

// Runs `body`; on an exception prints "<program>: error: <what>" (one line,
// secrets redacted, with the fix) and returns the matching exit code.
int guarded(const std::string& program, const std::string& database_url,
            const std::function<int()>& body);

}  // namespace txbox::relay::cli
