#include "nats_support.hpp"

#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support/process.hpp"
#include "support/test_env.hpp"

namespace txbox::test {

namespace {
// A unique_ptr owning a cnats handle, freed with its `Destroy` function.
template <typename Handle, void (*Destroy)(Handle*)>
struct HandleDeleter {
  void operator()(Handle* handle) const noexcept { Destroy(handle); }
};
template <typename Handle, void (*Destroy)(Handle*)>
using Owned = std::unique_ptr<Handle, HandleDeleter<Handle, Destroy>>;

using OwnedConnection = Owned<natsConnection, natsConnection_Destroy>;
using OwnedJetStream = Owned<jsCtx, jsCtx_Destroy>;
using OwnedStreamInfo = Owned<jsStreamInfo, jsStreamInfo_Destroy>;
using OwnedSubscription = Owned<natsSubscription, natsSubscription_Destroy>;
using OwnedMetaData = Owned<jsMsgMetaData, jsMsgMetaData_Destroy>;

std::string header(natsMsg* msg, const char* name) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, name, &value) == NATS_OK && value != nullptr ? value : "";
}

// Whether `call` (::bind or ::connect) succeeds on a fresh TCP socket for
// 127.0.0.1:port; the socket is closed again.
bool loopback_call_succeeds(int port, int (*call)(int, const sockaddr*, socklen_t)) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = call(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

bool port_free(int port) { return loopback_call_succeeds(port, ::bind); }

bool port_accepts(int port) { return loopback_call_succeeds(port, ::connect); }

int free_port_pair() {
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = 20000 + static_cast<int>((getpid() * 7919 + attempt * 104729) % 30000);
    if (port_free(port) && port_free(port + 1)) return port;
  }
  FAIL("no free port pair found");
  return 0;
}

std::string script() { return std::string(TXBOX_SOURCE_DIR) + "/scripts/nats.sh"; }
}  // namespace

brokers::BrokerUrl nats_broker_url(const std::string& url) { return brokers::parse_broker_url(url); }

std::string nats_subject(const std::string& prefix) { return unique_name(prefix) + ".events"; }

std::string nats_stream_name(const std::string& subject) {
  std::string out = subject;
  for (char& c : out)
    if (c == '.') c = '_';
  return out;
}

struct JetStreamAdmin::Impl {
  OwnedConnection nc;
  OwnedJetStream js;
};

JetStreamAdmin::JetStreamAdmin(const std::string& url) : impl_(std::make_unique<Impl>()) {
  natsConnection* nc = nullptr;
  REQUIRE(natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK);
  impl_->nc.reset(nc);
  jsCtx* js = nullptr;
  REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
  impl_->js.reset(js);
}

JetStreamAdmin::~JetStreamAdmin() {
  impl_->js.reset();
  if (impl_->nc) natsConnection_Close(impl_->nc.get());
}

void JetStreamAdmin::add_stream(const std::string& name, const std::vector<std::string>& subjects,
                                std::chrono::milliseconds duplicate_window) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  std::vector<const char*> subs;
  for (const auto& s : subjects) subs.push_back(s.c_str());
  cfg.Name = name.c_str();
  cfg.Subjects = subs.data();
  cfg.SubjectsLen = static_cast<int>(subs.size());
  cfg.Storage = js_FileStorage;
  cfg.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(duplicate_window).count();
  jsStreamInfo* si = nullptr;
  jsErrCode code{};
  const natsStatus s = js_AddStream(&si, impl_->js.get(), &cfg, nullptr, &code);
  OwnedStreamInfo info(si);
  INFO("js_AddStream " << name << ": " << natsStatus_GetText(s) << " code " << code);
  REQUIRE(s == NATS_OK);
}

std::string JetStreamAdmin::add_subject_with_stream(const std::string& prefix) {
  auto subject = nats_subject(prefix);
  add_stream(nats_stream_name(subject), {subject});
  return subject;
}

int64_t JetStreamAdmin::message_count(const std::string& name) {
  jsStreamInfo* si = nullptr;
  jsErrCode code{};
  const natsStatus s = js_GetStreamInfo(&si, impl_->js.get(), name.c_str(), nullptr, &code);
  OwnedStreamInfo info(si);
  if (s != NATS_OK) return -1;
  return static_cast<int64_t>(si->State.Msgs);
}

void JetStreamAdmin::delete_stream(const std::string& name) {
  (void)js_DeleteStream(impl_->js.get(), name.c_str(), nullptr, nullptr);
}

std::vector<JetStreamAdmin::StoredMessage> JetStreamAdmin::read_stream(const std::string& stream,
                                                                      const std::string& subject) {
  const int64_t count = message_count(stream);
  REQUIRE(count >= 0);
  std::vector<StoredMessage> out;
  if (count == 0) return out;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckNone;
  so.Config.DeliverPolicy = js_DeliverAll;
  const std::string durable = unique_name("reader");
  natsSubscription* raw = nullptr;
  jsErrCode code{};
  const natsStatus s = js_PullSubscribe(&raw, impl_->js.get(), subject.c_str(), durable.c_str(), nullptr, &so, &code);
  INFO("js_PullSubscribe on " << stream << ": " << natsStatus_GetText(s) << " code " << code);
  REQUIRE(s == NATS_OK);
  OwnedSubscription sub(raw);
  int empty_fetches = 0;
  while (static_cast<int64_t>(out.size()) < count && empty_fetches < 5) {
    natsMsgList list{};
    const natsStatus f = natsSubscription_Fetch(&list, sub.get(), 1000, 2000, &code);
    if (f == NATS_TIMEOUT) {
      ++empty_fetches;
      continue;
    }
    INFO("natsSubscription_Fetch: " << natsStatus_GetText(f));
    REQUIRE(f == NATS_OK);
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* m = list.Msgs[i];
      jsMsgMetaData* meta_raw = nullptr;
      REQUIRE(natsMsg_GetMetaData(&meta_raw, m) == NATS_OK);
      OwnedMetaData meta(meta_raw);
      out.push_back({meta->Sequence.Stream, header(m, "Nats-Msg-Id"), header(m, "message-key"),
                     std::string(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)))});
    }
    natsMsgList_Destroy(&list);
  }
  (void)natsSubscription_Unsubscribe(sub.get());  // deletes the consumer the library created
  REQUIRE(static_cast<int64_t>(out.size()) == count);
  return out;
}

struct CoreResponder::Impl {
  OwnedConnection nc;
  OwnedSubscription sub;
  std::string reply;
  std::atomic<int> answered{0};
  std::atomic<bool> complete{false};  // the subscription's last callback has returned

  static void on_complete(void* closure) noexcept { static_cast<Impl*>(closure)->complete = true; }

  static void on_request(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) noexcept {
    auto* self = static_cast<Impl*>(closure);
    if (natsMsg_GetReply(msg) != nullptr) {
      (void)natsConnection_Publish(nc, natsMsg_GetReply(msg), self->reply.data(),
                                   static_cast<int>(self->reply.size()));
      ++self->answered;
    }
    natsMsg_Destroy(msg);
  }
};

CoreResponder::CoreResponder(const std::string& url, const std::string& subject, std::string reply)
    : impl_(std::make_unique<Impl>()) {
  impl_->reply = std::move(reply);
  natsConnection* nc = nullptr;
  REQUIRE(natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK);
  impl_->nc.reset(nc);
  natsSubscription* sub = nullptr;
  REQUIRE(natsConnection_Subscribe(&sub, nc, subject.c_str(), &Impl::on_request, impl_.get()) == NATS_OK);
  impl_->sub.reset(sub);
  REQUIRE(natsSubscription_SetOnCompleteCB(sub, &Impl::on_complete, impl_.get()) == NATS_OK);
  REQUIRE(natsConnection_FlushTimeout(nc, 5000) == NATS_OK);  // the server knows the interest
}

CoreResponder::~CoreResponder() {
  if (impl_->sub) (void)natsSubscription_Unsubscribe(impl_->sub.get());
  // The callback gets impl_: free it only after the last call returned.
  for (int i = 0; i < 500 && !impl_->complete; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (impl_->nc) natsConnection_Close(impl_->nc.get());
  impl_->sub.reset();
  impl_->nc.reset();
}

int CoreResponder::answered() const { return impl_->answered.load(); }

PrivateNats::PrivateNats() {
  dir_ = (std::filesystem::temp_directory_path() / unique_name("nats")).string();
  port_ = free_port_pair();
  start();
}

PrivateNats::~PrivateNats() {
  run({script(), "stop", dir_}, std::chrono::seconds(30));
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void PrivateNats::start() {
  auto r = run({script(), "start", dir_, std::to_string(port_)}, std::chrono::seconds(30));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  url_ = "nats://127.0.0.1:" + std::to_string(port_);
}

void PrivateNats::kill() {
  auto r = run({script(), "kill", dir_}, std::chrono::seconds(30));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
}

void PrivateNats::crash_now() {
  std::ifstream pid_file(dir_ + "/nats.pid");
  pid_t pid = 0;
  pid_file >> pid;
  REQUIRE(pid > 0);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  // Gone = the listener no longer accepts (a zombie, if nobody reaps it yet,
  // holds no socket).
  bool gone = false;
  for (int i = 0; i < 1000 && !(gone = !port_accepts(port_)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(gone);
  std::filesystem::remove(dir_ + "/nats.pid");
}

}  // namespace txbox::test
