#include "txbox/core/error.hpp"

namespace txbox {

namespace {
std::string joined(const std::string& what, const std::string& hint) {
  return hint.empty() ? what : what + "; " + hint;
}
}  // namespace

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::usage: return "usage";
    case ErrorKind::config: return "config";
    case ErrorKind::unavailable: return "unavailable";
    case ErrorKind::permanent: return "permanent";
    case ErrorKind::internal: return "internal";
  }
  return "internal";
}

bool retryable_by_default(ErrorKind kind) noexcept { return kind == ErrorKind::unavailable; }

Error::Error(ErrorKind kind, const std::string& what, const std::string& hint)
    : Error(kind, what, Retryable{retryable_by_default(kind)}, hint) {}

Error::Error(ErrorKind kind, const std::string& what, Retryable retryable, const std::string& hint)
    : std::runtime_error(joined(what, hint)), kind_(kind), retryable_(retryable.value), hint_(hint) {}

int exit_code(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::usage:
    case ErrorKind::config: return kExitUsage;
    case ErrorKind::unavailable:
    case ErrorKind::permanent:
    case ErrorKind::internal: return kExitFailure;
  }
  return kExitFailure;
}

}  // namespace txbox
