#include "cli_common.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <pqxx/pqxx>
#include <regex>

#include "txbox/brokers/broker.hpp"
#include "txbox/outbox/schema.hpp"
#include "txbox/relay/cli.hpp"

namespace txbox::relay {

std::string redact_url(std::string_view url) {
  static const std::regex userinfo(R"(([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@)");
  static const std::regex keyword(R"((password\s*=\s*)('[^']*'|\S+))");
  std::string out = std::regex_replace(std::string(url), userinfo, "$1:***@");
  return std::regex_replace(out, keyword, "$1***");
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

void setup_logging(const std::string& program, const std::string& level) {
  auto logger = spdlog::stderr_logger_mt(program);
  logger->set_pattern(fmt::format("%Y-%m-%dT%H:%M:%S.%e %l {}: %v", program));
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

int guarded(const std::string& program, const std::string& database_url,
            const std::function<int()>& body) {
  auto report = [&](const std::string& text) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(),
                 one_line(redact_url(text)).c_str());
  };
  try {
    return body();
  } catch (const pqxx::broken_connection& e) {
    report(fmt::format(
        "cannot connect to PostgreSQL at '{}': {}; check --database-url and that the server is "
        "running and reachable",
        database_url, e.what()));
    return kExitRuntime;
  } catch (const outbox::SchemaError& e) {
    report(e.what());
    return kExitRuntime;
  } catch (const pqxx::sql_error& e) {
    report(fmt::format("PostgreSQL rejected a statement: {} (SQLSTATE {})", e.what(), e.sqlstate()));
    return kExitRuntime;
  } catch (const std::invalid_argument& e) {
    report(e.what());
    return kExitUsage;
  } catch (const brokers::BrokerError& e) {
    report(fmt::format("{}{}", e.what(), e.retryable() ? " (retryable: try again later)" : ""));
    return e.retryable() ? kExitRuntime : kExitUsage;
  } catch (const std::exception& e) {
    report(e.what());
    return kExitRuntime;
  }
}

}  // namespace cli
}  // namespace txbox::relay
