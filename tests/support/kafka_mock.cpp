#include "support/kafka_mock.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/test_env.hpp"

namespace txbox::test {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Free loopback ports: bound to port 0 together (so they differ), then released.
std::vector<int> free_ports(int count) {
  std::vector<int> fds;
  std::vector<int> ports;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    fds.push_back(fd);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
      for (int f : fds) close(f);
      throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
    }
    ports.push_back(ntohs(sin.sin_port));
  }
  for (int f : fds) close(f);
  return ports;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string normalize(const std::string& command) {
  std::istringstream in(command);
  std::string word, out;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

}  // namespace

KafkaMock::KafkaMock(int brokers) : brokers_(brokers) {
  char tmpl[] = "/tmp/txbox-kafka-mock-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  try {
    ports_ = free_ports(brokers);
    start();
  } catch (...) {
    process_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw;
  }
}

KafkaMock::~KafkaMock() {
  process_.reset();  // SIGKILL + wait
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string KafkaMock::bootstrap() const {
  std::string out;
  for (int port : ports_) out += (out.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(port);
  return out;
}

bool KafkaMock::running() const { return process_ && process_->running(); }

std::string KafkaMock::log_tail() const {
  auto lines = lines_of(dir_ + "/mock.log");
  std::string out;
  for (std::size_t i = lines.size() > 20 ? lines.size() - 20 : 0; i < lines.size(); ++i)
    out += "\n  " + lines[i];
  return out;
}

void KafkaMock::start() {
  const std::string bootstrap_file = dir_ + "/bootstrap";
  std::filesystem::remove(bootstrap_file);
  std::string port_list;
  for (int port : ports_) port_list += (port_list.empty() ? "" : ",") + std::to_string(port);
  // Another process may briefly hold a port (e.g. a just-closed client
  // connection bound to it): retry the start for a few seconds.
  const auto deadline = Clock::now() + 20s;
  while (true) {
    process_ = std::make_unique<Process>(
        std::vector<std::string>{binary_path("txbox-kafka-mock"), "--brokers",
                                 std::to_string(brokers_), "--ports", port_list, "--control",
                                 dir_ + "/control", "--bootstrap-file", bootstrap_file},
        dir_ + "/mock.log");
    while (Clock::now() < deadline) {
      if (std::filesystem::exists(bootstrap_file)) return;
      if (!process_->running()) break;
      std::this_thread::sleep_for(20ms);
    }
    if (Clock::now() >= deadline) {
      process_.reset();
      throw std::runtime_error("txbox-kafka-mock did not start within 20 s on ports " +
                               port_list + "; its log:" + log_tail());
    }
    std::this_thread::sleep_for(200ms);  // exited (port busy?): try again
  }
}

void KafkaMock::signal(int sig) {
  if (process_) process_->signal(sig);
}

void KafkaMock::kill() {
  if (!process_) return;
  process_->signal(SIGKILL);
  process_->wait(10s);
  process_.reset();
}

void KafkaMock::restart() {
  kill();
  start();
}

void KafkaMock::control(const std::string& command) {
  const std::string text = normalize(command);
  if (text.empty()) throw std::invalid_argument("KafkaMock::control: empty command");
  if (!running()) throw std::runtime_error("KafkaMock::control('" + text + "'): the mock is not running");
  const std::string log = dir_ + "/control.log";
  const std::size_t before = lines_of(log).size();
  const auto deadline = Clock::now() + 5s;

  // O_NONBLOCK: fails with ENXIO while the mock has no reader open (it
  // reopens the FIFO after each writer), instead of blocking forever.
  int fd = -1;
  while ((fd = open((dir_ + "/control").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
    if ((errno != ENXIO && errno != ENOENT && errno != EINTR) || Clock::now() >= deadline)
      throw std::runtime_error("KafkaMock::control('" + text + "'): cannot open the control FIFO: " +
                               std::strerror(errno));
    std::this_thread::sleep_for(10ms);
  }
  const std::string line = text + "\n";
  const ssize_t written = write(fd, line.data(), line.size());
  close(fd);
  if (written != static_cast<ssize_t>(line.size()))
    throw std::runtime_error("KafkaMock::control('" + text + "'): write to the control FIFO failed");

  while (Clock::now() < deadline) {
    const auto lines = lines_of(log);
    for (std::size_t i = before; i < lines.size(); ++i) {
      if (lines[i] == "ok " + text) return;
      if (lines[i].rfind("error " + text + ": ", 0) == 0)
        throw std::runtime_error("KafkaMock::control('" + text + "'): " + lines[i]);
    }
    std::this_thread::sleep_for(10ms);
  }
  throw std::runtime_error("KafkaMock::control('" + text + "'): no reply from the mock within 5 s; its log:" +
                           log_tail());
}

}  // namespace txbox::test
