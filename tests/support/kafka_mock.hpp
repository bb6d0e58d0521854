#pragma once
// A private Kafka mock cluster (scripts/kafka_mock.cpp) for one fault test:
// its own process on fixed loopback ports, so it can be killed and restarted
// where the clients expect it, and fault injection through its --control FIFO.

#include <memory>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace txbox::test {

class KafkaMock {
 public:
  // Picks free loopback ports, starts txbox-kafka-mock with --ports and
  // --control and waits for its bootstrap file. Throws std::runtime_error
  // (with the mock's log) when it does not come up within 20 s.
  explicit KafkaMock(int brokers = 1);
  ~KafkaMock();  // kills the mock and removes its temporary directory
  KafkaMock(const KafkaMock&) = delete;
  KafkaMock& operator=(const KafkaMock&) = delete;

  std::string bootstrap() const;  // 127.0.0.1:P1,127.0.0.1:P2,...
  const std::vector<int>& ports() const { return ports_; }
  bool running() const;

  void kill();     // SIGKILL and wait: clients then see connection refused
  // Sends a signal to the mock process, e.g. SIGSTOP for a broker that
  // keeps its connections open but answers nothing, then SIGCONT.
  void signal(int sig);
  void restart();  // starts again on the SAME ports (all data is lost: in memory)

  // Sends one control command (see `txbox-kafka-mock --help`), e.g.
  // "push-errors Produce NOT_ENOUGH_REPLICAS" or "all-down", and waits up to
  // 5 s for the mock's "ok"; throws std::runtime_error with the mock's error
  // text otherwise.
  void control(const std::string& command);

 private:
  void start();
  std::string log_tail() const;

  int brokers_;
  std::string dir_;
  std::vector<int> ports_;
  std::unique_ptr<Process> process_;
};

}  // namespace txbox::test
