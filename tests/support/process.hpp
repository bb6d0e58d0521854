#pragma once
// Child processes for tests that run the real binaries (relay, CLI, mock
// broker) and kill them.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace txbox::test {

class Process {
 public:
  // Starts `argv` (argv[0] is a path) with stdout and stderr appended to
  // `log_path` (or discarded when empty); `env` entries NAME=VALUE are added
  // to the current environment.
  Process(std::vector<std::string> argv, std::string log_path = {},
          std::vector<std::string> env = {});
  ~Process();  // SIGKILLs the child if it still runs
  Process(Process&&) noexcept;
  Process& operator=(Process&&) = delete;

  pid_t pid() const noexcept { return pid_; }
  void signal(int sig) const;
  // Exit code (128 + signal when killed), or nullopt if still running at the deadline.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct RunResult {
  int exit_code;
  std::string output;  // stdout + stderr
};

// Runs a command to completion (killing it after `timeout`), capturing output.
RunResult run(std::vector<std::string> argv, std::chrono::milliseconds timeout = std::chrono::seconds(60),
              std::vector<std::string> env = {});

}  // namespace txbox::test
