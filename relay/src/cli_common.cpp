#include "cli_common.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <cstdio>
#include <pqxx/pqxx>
#include <regex>
#include <spdlog/sinks/sink.h>

#include "txbox/brokers/broker.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/relay/cli.hpp"

namespace txbox::relay {

std::string redact_url(std::string_view text) {
  // URLs: whatever sits between "://" and the last '@' of the same word
  // goes, user included; a password with an unencoded '@' or '/' cannot
  // leak a piece of itself that way.
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t scheme = text.find("://", pos);
    if (scheme == std::string_view::npos) break;
    const size_t start = scheme + 3;
    size_t end = start;
    while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end])) && text[end] != '\'' &&
           text[end] != '"' && text[end] != '<' && text[end] != '>' && text[end] != '`')
      ++end;
    const size_t at = text.substr(start, end - start).rfind('@');
    out.append(text.substr(pos, start - pos));
    if (at != std::string_view::npos) {
      out += "***";
      out.append(text.substr(start + at, end - start - at));
    } else {
      out.append(text.substr(start, end - start));
    }
    pos = end;
  }
  out.append(text.substr(std::min(pos, text.size())));
  // libpq key=value strings.
  static const std::regex keyword(R"((password\s*=\s*)('([^'\\]|\\.)*'|\S+))");
  return std::regex_replace(out, keyword, "$1***");
}

std::string escape_control(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  return out;
}

std::string one_line(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\t' || c == '\r') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

namespace cli {

namespace {

// Every log line passes through here: control characters in any logged
// value (a destination with a newline, a broker's error text) are escaped,
// so one event is one line and nobody can forge another; URL credentials
// are removed whatever the caller passed.
class SafeSink final : public spdlog::sinks::sink {
 public:
  explicit SafeSink(std::shared_ptr<spdlog::sinks::sink> inner) : inner_(std::move(inner)) {}
  void log(const spdlog::details::log_msg& msg) override {
    const std::string text = escape_control(redact_url(std::string_view(msg.payload.data(), msg.payload.size())));
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(text.data(), text.size());
    inner_->log(copy);
  }
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    inner_->set_formatter(std::move(formatter));
  }

 private:
  std::shared_ptr<spdlog::sinks::sink> inner_;
};

}  // namespace

void setup_logging(const std::string& program, const std::string& level) {
  auto sink = std::make_shared<SafeSink>(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto logger = std::make_shared<spdlog::logger>(program, sink);
  logger->set_pattern(fmt::format("%Y-%m-%dT%H:%M:%S.%e %l {}: %v", program));
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

int guarded(const std::string& program, const std::string& database_url,
            const std::function<int()>& body) {
  auto report = [&](const std::string& text) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(),
                 escape_control(one_line(redact_url(text))).c_str());
  };
  try {
    return body();
  } catch (const pqxx::broken_connection& e) {
    report(fmt::format(
        "cannot connect to PostgreSQL at '{}': {}; check --database-url and that the server is "
        "running and reachable",
        database_url, e.what()));
    return kExitFailure;
  } catch (const pqxx::sql_error& e) {
    report(fmt::format("PostgreSQL rejected a statement: {} (SQLSTATE {})", e.what(), e.sqlstate()));
    return kExitFailure;
  } catch (const txbox::Error& e) {
    // The one place an error's kind becomes the exit code.
    report(fmt::format("{}{}", e.what(), e.retryable() ? " (retryable: try again later)" : ""));
    return exit_code(e.kind());
  } catch (const std::exception& e) {
    report(e.what());
    return kExitFailure;
  }
}

}  // namespace cli
}  // namespace txbox::relay
