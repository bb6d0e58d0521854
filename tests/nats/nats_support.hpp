#pragma once
// Helpers of the NATS tests: JetStream administration through cnats (streams
// created and counted directly, not through the adapter under test), a
// private nats-server for the fault tests. (The relay command line:
// relay_drain_command in fault/fault_support.hpp.)

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
  // A new subject nats_subject(prefix) with a stream of its own over it
  // (named nats_stream_name(subject), defaults as above); returns the subject.
  std::string add_subject_with_stream(const std::string& prefix);
  // Number of messages stored in the stream, -1 when it does not exist.
  int64_t message_count(const std::string& name);
  void delete_stream(const std::string& name);

  // One message as stored in a stream.
  struct StoredMessage {
    uint64_t sequence = 0;
    std::string message_id;  // Nats-Msg-Id
    std::string key;         // message-key header, empty if none
    std::string payload;
  };
  // Every message of `stream` (filtered by `subject`), in stream order, read
  // with a pull consumer of its own (deleted afterwards); REQUIREs success.
  std::vector<StoredMessage> read_stream(const std::string& stream, const std::string& subject);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A core NATS subscriber on `subject` that answers every request with
// `reply` (not a JetStream stream); unsubscribes in the destructor.
class CoreResponder {
 public:
  CoreResponder(const std::string& url, const std::string& subject, std::string reply);
  ~CoreResponder();
  CoreResponder(const CoreResponder&) = delete;
  CoreResponder& operator=(const CoreResponder&) = delete;
  int answered() const;  // requests answered so far

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
  // SIGKILL sent from this process at once (no script start-up in between),
  // for a crash timed within milliseconds; returns once the server is gone.
  void crash_now();
  void start();  // again on the same port and directory (data persists)

 private:
  std::string dir_;
  int port_ = 0;
  std::string url_;
};

}  // namespace txbox::test
