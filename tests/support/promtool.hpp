#pragma once
// `promtool check metrics` (Debian package prometheus) on a metrics text:
// its complaints, empty when it has none.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "support/process.hpp"

namespace txbox::test {

inline std::string promtool_complaints(const std::string& metrics_text) {
  const std::string path = "/tmp/txbox-metrics-" + std::to_string(::getpid()) + ".txt";
  std::ofstream(path) << metrics_text;
  auto result = run({"/bin/sh", "-c", "promtool check metrics < " + path + " 2>&1"}, std::chrono::seconds(60));
  std::remove(path.c_str());
  if (result.exit_code != 0 && result.output.empty()) return "promtool exited " + std::to_string(result.exit_code);
  return result.output;
}

}  // namespace txbox::test
