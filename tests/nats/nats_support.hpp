#pragma once
// Helpers of the NATS tests: JetStream administration through cnats (streams
// created and counted directly, not through the adapter under test), a
// private nats-server for the fault tests, and the relay command line.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "txbox/brokers/broker.hpp"
#include "txbox/nats/nats.hpp"

namespace txbox::test {

brokers::BrokerUrl nats_broker_url(const std::string& url);

// A unique subject "<prefix>_<pid>_<n>_<salt>.events" and its stream name.
std::string nats_subject(const std::string& prefix);
std::string nats_stream_name(const std::string& subject);  // '.' -> '_'

class JetStreamAdmin {
 public:
  explicit JetStreamAdmin(const std::string& url);
  ~JetStreamAdmin();
  JetStreamAdmin(const JetStreamAdmin&) = delete;
  JetStreamAdmin& operator=(const JetStreamAdmin&) = delete;

  // File storage stream `name` over `subjects`; REQUIREs success.
  void add_stream(const std::string& name, const std::vector<std::string>& subjects,
                  std::chrono::milliseconds duplicate_window = std::chrono::minutes(2));
  // Number of messages stored in the stream, -1 when it does not exist.
  int64_t message_count(const std::string& name);
  void delete_stream(const std::string& name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// nats-server of its own (scripts/nats.sh) in a temp directory on a free
// port; stopped (SIGTERM) by the destructor.
class PrivateNats {
 public:
  PrivateNats();
  ~PrivateNats();
  PrivateNats(const PrivateNats&) = delete;
  PrivateNats& operator=(const PrivateNats&) = delete;
  const std::string& url() const { return url_; }
  int port() const { return port_; }
  void kill();   // SIGKILL: a crash
  void start();  // again on the same port and directory (data persists)

 private:
  std::string dir_;
  int port_ = 0;
  std::string url_;
};

std::vector<std::string> nats_relay_command(const std::string& database_url, const std::string& nats_url,
                                            std::vector<std::string> extra = {});

}  // namespace txbox::test
