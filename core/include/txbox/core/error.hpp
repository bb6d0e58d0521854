#pragma once
// The one error family of txbox. Every error txbox raises on purpose is a
// txbox::Error with a kind (what sort of problem it is), a retryable flag
// (whether the same call may succeed later without anyone changing
// anything) and a hint (what to do about it). Programs turn the kind into
// their exit code in one place: exit_code().

#include <stdexcept>
#include <string>

namespace txbox {

enum class ErrorKind {
  usage,        // the caller passed something malformed: a flag, a URL, a message field
  config,       // a setting is well-formed but unusable: a config file, a property, credentials
  unavailable,  // something needed is not there now: database or broker down, schema not migrated
  permanent,    // the request itself is refused and will be refused again: too large, not authorized
  internal,     // a bug in txbox or a library below it
};

const char* to_string(ErrorKind kind) noexcept;

// Whether errors of this kind are usually worth retrying (only unavailable).
bool retryable_by_default(ErrorKind kind) noexcept;

// Overrides the kind's default retryable flag (a type of its own, so a
// string literal hint can never be taken for a bool).
struct Retryable {
  bool value;
};

class Error : public std::runtime_error {
 public:
  // `what` says what went wrong (never with a secret in it); `hint`, when
  // not empty, what to do about it. what() is "<what>" or "<what>; <hint>".
  Error(ErrorKind kind, const std::string& what, const std::string& hint = {});
  Error(ErrorKind kind, const std::string& what, Retryable retryable, const std::string& hint = {});

  ErrorKind kind() const noexcept { return kind_; }
  bool retryable() const noexcept { return retryable_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  ErrorKind kind_;
  bool retryable_;
  std::string hint_;
};

// Malformed input from the caller: flags, URLs, options, message fields.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what, const std::string& hint = {})
      : Error(ErrorKind::usage, what, hint) {}
};

// A well-formed but unusable setting: config files, client properties.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what, const std::string& hint = {})
      : Error(ErrorKind::config, what, hint) {}
};

// Exit codes of the txbox programs, by kind: 2 for usage and config (the
// command line or its files must change), 1 for everything else.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
int exit_code(ErrorKind kind) noexcept;

}  // namespace txbox
