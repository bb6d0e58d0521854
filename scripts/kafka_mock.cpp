// txbox-kafka-mock: a standalone Kafka "cluster" for tests, built on
// librdkafka's in-process mock cluster. Real clients (librdkafka, kcat)
// connect over loopback TCP.
//
//   txbox-kafka-mock [--brokers N] [--ports P1,P2,...] [--topic NAME:PARTITIONS]...
//                    [--partitions 4] [--bootstrap-file PATH] [--control PATH]
//
// Prints the bootstrap servers on stdout once listening, runs until
// SIGTERM/SIGINT, exits 0. Bad flags: one error line on stderr, exit 2.
//
// Fixed ports: librdkafka 2.0.2 has no API to choose the mock brokers' listen
// ports (each binds 127.0.0.1:0). This executable interposes bind(): a bind
// of an AF_INET loopback address with port 0 gets the next port of --ports.
// The executable is linked with -rdynamic so librdkafka's call to bind()
// resolves here; the real bind() is found with dlsym(RTLD_NEXT). The socket
// also gets SO_REUSEADDR so a restarted mock can reuse the ports at once.
// accept() is interposed the same way to set TCP_NODELAY on the connections
// the mock accepts, as a real broker does.
//
// Fault injection (--control PATH): the mock creates a FIFO at PATH and reads
// one command per line from it (any number of writers, one after another),
// applies it to the mock cluster and appends "ok <command>" or
// "error <command>: <reason>" to PATH.log (and stdout). See kControlHelp.

#include <arpa/inet.h>
#include <dlfcn.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <string_view>
#include <utility>
#include <vector>

namespace {

// Filled before librdkafka starts; read by bind() from the mock threads.
std::vector<int> g_ports;
std::atomic<std::size_t> g_next_port{0};

using bind_fn = int (*)(int, const struct sockaddr*, socklen_t);

bind_fn real_bind() {
  static const bind_fn fn = reinterpret_cast<bind_fn>(dlsym(RTLD_NEXT, "bind"));
  return fn;
}

}  // namespace

extern "C" int bind(int fd, const struct sockaddr* addr, socklen_t len) noexcept {
  const bind_fn next = real_bind();
  if (next == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  if (addr != nullptr && addr->sa_family == AF_INET && len >= sizeof(sockaddr_in) &&
      !g_ports.empty()) {
    sockaddr_in sin;
    std::memcpy(&sin, addr, sizeof sin);
    if (sin.sin_port == 0 && (ntohl(sin.sin_addr.s_addr) >> 24) == 127) {
      const std::size_t index = g_next_port.fetch_add(1);
      if (index < g_ports.size()) {
        sin.sin_port = htons(static_cast<uint16_t>(g_ports[index]));
        const int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        return next(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
      }
    }
  }
  return next(fd, addr, len);
}

// librdkafka's mock broker does not set TCP_NODELAY on the connections it
// accepts (real brokers do): a second response on a connection would wait
// for the client's delayed ACK, about 40 ms, which no real cluster shows.
// Interposed like bind() above.
using accept_fn = int (*)(int, struct sockaddr*, socklen_t*);

extern "C" int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  static const accept_fn next = reinterpret_cast<accept_fn>(dlsym(RTLD_NEXT, "accept"));
  if (next == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  const int client = next(fd, addr, len);
  if (client >= 0) {
    const int one = 1;
    (void)setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return client;
}

namespace {

constexpr const char* kUsage =
    "usage: txbox-kafka-mock [--brokers N] [--ports P1,P2,...] [--topic NAME:PARTITIONS]... "
    "[--partitions 4] [--bootstrap-file PATH] [--control PATH]";

constexpr const char* kControlHelp =
    "control commands (one per line, written to the --control FIFO):\n"
    "  broker-down ID | broker-up ID    disconnect a broker and refuse connections / accept again\n"
    "  all-down | all-up                the same for every broker\n"
    "  push-errors APIKEY ERR [ERR...]  the next requests of APIKEY (any broker) fail with ERR...\n"
    "  broker-push-errors BROKERID APIKEY ERR:RTT_MS [ERR:RTT_MS...]\n"
    "                                   the same on one broker, each response delayed RTT_MS\n"
    "  clear-errors APIKEY              drop the pending push-errors of APIKEY\n"
    "  topic-error TOPIC ERR            Metadata/Produce report ERR for TOPIC (0 = clear)\n"
    "  partition-leader TOPIC PARTITION BROKERID   move the leader (-1 = leaderless)\n"
    "  topic-create TOPIC PARTITIONS REPLICATION\n"
    "  rtt BROKERID MS                  delay every response of a broker (-1 = all brokers)\n"
    "  ping                             no-op\n"
    "APIKEY: number or name (Produce, Fetch, Metadata, InitProducerId, ...). ERR: number or\n"
    "librdkafka name without RD_KAFKA_RESP_ERR_ (NOT_ENOUGH_REPLICAS, _TRANSPORT, ...).\n"
    "Each command gets one line in PATH.log: 'ok <command>' or 'error <command>: <reason>'.\n";

struct Options {
  int brokers = 1;
  std::vector<std::pair<std::string, int>> topics;
  std::string bootstrap_file;
  std::string control;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "txbox-kafka-mock: " << message << " (" << kUsage << ")" << std::endl;
  std::exit(2);
}

int parse_int(std::string_view text, const std::string& flag, int min, int max) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    usage_error(flag + " expects an integer between " + std::to_string(min) + " and " +
                std::to_string(max) + ", got '" + std::string(text) + "'");
  }
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    bool has_value = false;
    if (auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "-h" || flag == "--help") {
      std::cout
          << kUsage << "\n"
          << "  --brokers N            number of mock brokers (default 1)\n"
          << "  --ports P1,P2,...      fixed loopback listen ports, one per broker (default: "
             "random)\n"
          << "  --topic NAME:PARTS     pre-create a topic (repeatable); others are auto-created\n"
          << "  --partitions 4         partitions of auto-created topics: always 4 in librdkafka "
             "2.0.2\n"
          << "  --bootstrap-file PATH  write host:port,... there once listening (atomic rename)\n"
          << "  --control PATH         create a FIFO at PATH and read fault commands from it\n"
          << kControlHelp;
      std::exit(0);
    }
    const auto take = [&]() -> std::string {
      if (has_value) {
        return value;
      }
      if (i + 1 >= argc) {
        usage_error(flag + " needs a value");
      }
      return argv[++i];
    };
    if (flag == "--brokers") {
      options.brokers = parse_int(take(), flag, 1, 64);
    } else if (flag == "--ports") {
      const std::string list = take();
      std::size_t start = 0;
      while (start <= list.size()) {
        const std::size_t comma = std::min(list.find(',', start), list.size());
        g_ports.push_back(
            parse_int(std::string_view(list).substr(start, comma - start), flag, 1, 65535));
        start = comma + 1;
      }
    } else if (flag == "--topic") {
      const std::string spec = take();
      const auto colon = spec.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        usage_error("--topic expects NAME:PARTITIONS, got '" + spec + "'");
      }
      options.topics.emplace_back(
          spec.substr(0, colon),
          parse_int(std::string_view(spec).substr(colon + 1), flag, 1, 10000));
    } else if (flag == "--partitions") {
      const int partitions = parse_int(take(), flag, 1, 10000);
      if (partitions != 4) {
        usage_error(
            "--partitions: librdkafka 2.0.2's mock cluster always auto-creates topics with 4 "
            "partitions; pre-create topics with another count using --topic NAME:" +
            std::to_string(partitions));
      }
    } else if (flag == "--bootstrap-file") {
      options.bootstrap_file = take();
      if (options.bootstrap_file.empty()) {
        usage_error("--bootstrap-file needs a non-empty path");
      }
    } else if (flag == "--control") {
      options.control = take();
      if (options.control.empty()) {
        usage_error("--control needs a non-empty path");
      }
    } else {
      usage_error("unknown flag '" + flag + "'");
    }
  }
  if (!g_ports.empty() && static_cast<int>(g_ports.size()) != options.brokers) {
    usage_error("--ports lists " + std::to_string(g_ports.size()) + " port(s) but --brokers is " +
                std::to_string(options.brokers) + ": give exactly one port per broker");
  }
  return options;
}

void log_to_stderr(const rd_kafka_t* /*rk*/, int level, const char* facility, const char* message) {
  if (level <= 4) {
    std::fprintf(stderr, "txbox-kafka-mock: %%%d %s: %s\n", level, facility, message);
  }
}

// librdkafka 2.0.2 aborts (assertion in rd_kafka_mock_cluster_destroy) when a
// mock broker cannot bind, so check the fixed ports first.
bool port_free(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  const int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = real_bind()(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin) == 0 &&
                  listen(fd, 1) == 0;
  close(fd);
  return ok;
}

bool write_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content << "\n";
    out.flush();
    if (!out) {
      return false;
    }
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// ---- fault-injection control ------------------------------------------------

// Kafka protocol API keys by name (Kafka's ApiKeys enum).
constexpr std::pair<const char*, int> kApiKeys[] = {
    {"Produce", 0},
    {"Fetch", 1},
    {"ListOffsets", 2},
    {"Offset", 2},
    {"Metadata", 3},
    {"LeaderAndIsr", 4},
    {"StopReplica", 5},
    {"UpdateMetadata", 6},
    {"ControlledShutdown", 7},
    {"OffsetCommit", 8},
    {"OffsetFetch", 9},
    {"FindCoordinator", 10},
    {"JoinGroup", 11},
    {"Heartbeat", 12},
    {"LeaveGroup", 13},
    {"SyncGroup", 14},
    {"DescribeGroups", 15},
    {"ListGroups", 16},
    {"SaslHandshake", 17},
    {"ApiVersion", 18},
    {"ApiVersions", 18},
    {"CreateTopics", 19},
    {"DeleteTopics", 20},
    {"DeleteRecords", 21},
    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23},
    {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25},
    {"EndTxn", 26},
    {"WriteTxnMarkers", 27},
    {"TxnOffsetCommit", 28},
    {"DescribeAcls", 29},
    {"CreateAcls", 30},
    {"DeleteAcls", 31},
    {"DescribeConfigs", 32},
    {"AlterConfigs", 33},
    {"AlterReplicaLogDirs", 34},
    {"DescribeLogDirs", 35},
    {"SaslAuthenticate", 36},
    {"CreatePartitions", 37},
    {"CreateDelegationToken", 38},
    {"RenewDelegationToken", 39},
    {"ExpireDelegationToken", 40},
    {"DescribeDelegationToken", 41},
    {"DeleteGroups", 42},
    {"ElectLeaders", 43},
    {"IncrementalAlterConfigs", 44},
    {"AlterPartitionReassignments", 45},
    {"ListPartitionReassignments", 46},
    {"OffsetDelete", 47},
};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool parse_number(std::string_view text, long long& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

long long number_arg(std::string_view text, const char* what, long long min, long long max) {
  long long value = 0;
  if (!parse_number(text, value) || value < min || value > max) {
    throw std::invalid_argument(std::string(what) + " must be an integer between " +
                                std::to_string(min) + " and " + std::to_string(max) + ", got '" +
                                std::string(text) + "'");
  }
  return value;
}

int16_t api_key_arg(std::string_view text) {
  long long value = 0;
  if (parse_number(text, value)) {
    if (value < 0 || value > 32767) {
      throw std::invalid_argument("APIKEY out of range: " + std::string(text));
    }
    return static_cast<int16_t>(value);
  }
  std::string_view name = text;
  if (const auto eq = name.find('='); eq != std::string_view::npos) {  // "Produce=0"
    return api_key_arg(name.substr(eq + 1));
  }
  if (name.size() > 7 && iequals(name.substr(name.size() - 7), "Request")) {
    name.remove_suffix(7);
  }
  for (const auto& [key_name, key] : kApiKeys) {
    if (iequals(name, key_name)) {
      return static_cast<int16_t>(key);
    }
  }
  throw std::invalid_argument("unknown APIKEY '" + std::string(text) +
                              "' (use a number or a name such as Produce, Fetch, Metadata)");
}

// Error code from a number or a librdkafka error name (with or without the
// RD_KAFKA_RESP_ERR_ prefix), found by scanning the codes through err2name.
rd_kafka_resp_err_t error_arg(std::string_view text) {
  long long value = 0;
  if (parse_number(text, value)) {
    return static_cast<rd_kafka_resp_err_t>(value);
  }
  std::string_view name = text;
  constexpr std::string_view prefix = "RD_KAFKA_RESP_ERR_";
  if (name.size() > prefix.size() && iequals(name.substr(0, prefix.size()), prefix)) {
    name.remove_prefix(prefix.size());
  }
  for (int code = RD_KAFKA_RESP_ERR__BEGIN; code < RD_KAFKA_RESP_ERR_END_ALL; ++code) {
    const char* candidate = rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(code));
    if (candidate != nullptr && *candidate != '\0' && iequals(name, candidate)) {
      return static_cast<rd_kafka_resp_err_t>(code);
    }
  }
  throw std::invalid_argument("unknown error '" + std::string(text) +
                              "' (use a number or a name such as NOT_ENOUGH_REPLICAS)");
}

void check(rd_kafka_resp_err_t err, const std::string& what) {
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error(what + ": " + rd_kafka_err2name(err) + " (" + rd_kafka_err2str(err) +
                             ")");
  }
}

class Control {
 public:
  Control(rd_kafka_mock_cluster_t* mcluster, int brokers, std::string path)
      : mcluster_(mcluster), brokers_(brokers), path_(std::move(path)), log_path_(path_ + ".log") {}

  // Creates the FIFO (or reuses one left by an earlier run) and starts reading.
  void start() {
    struct stat st {};
    if (lstat(path_.c_str(), &st) == 0) {
      if (!S_ISFIFO(st.st_mode)) {
        throw std::runtime_error("--control " + path_ + " exists and is not a FIFO");
      }
    } else if (mkfifo(path_.c_str(), 0600) != 0) {
      throw std::runtime_error("cannot create the FIFO --control " + path_ + ": " +
                               std::strerror(errno));
    }
    log_fd_ = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd_ < 0) {
      throw std::runtime_error("cannot open " + log_path_ + ": " + std::strerror(errno));
    }
    if (pipe2(wake_, O_CLOEXEC) != 0) {
      throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
    }
    thread_ = std::thread([this] { run(); });
  }

  // Stops reading; no command touches the cluster after this returns.
  void stop() {
    if (!thread_.joinable()) {
      return;
    }
    const char byte = 'x';
    (void)!write(wake_[1], &byte, 1);
    thread_.join();
    close(wake_[0]);
    close(wake_[1]);
    close(log_fd_);
    std::remove(path_.c_str());
  }

 private:
  void run() {
    while (true) {
      const int fd = open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) {
        report("error <open>: cannot open the control FIFO: " + std::string(std::strerror(errno)));
        return;
      }
      const bool more = read_commands(fd);
      close(fd);
      if (!more) {
        return;
      }
    }
  }

  // Reads lines until the writers are gone (true: reopen) or stop() (false).
  bool read_commands(int fd) {
    std::string pending;
    char buffer[4096];
    while (true) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) {
          continue;
        }
        return false;
      }
      if (fds[1].revents != 0) {
        return false;
      }
      if (fds[0].revents == 0) {
        continue;
      }
      const ssize_t n = read(fd, buffer, sizeof buffer);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      if (n <= 0) {  // every writer closed: a partial last line is a command too
        if (!pending.empty()) {
          handle(pending);
        }
        return true;
      }
      pending.append(buffer, static_cast<std::size_t>(n));
      std::size_t newline;
      while ((newline = pending.find('\n')) != std::string::npos) {
        handle(pending.substr(0, newline));
        pending.erase(0, newline + 1);
      }
    }
  }

  void report(const std::string& line) {
    const std::string text = line + "\n";
    (void)!write(log_fd_, text.data(), text.size());
    std::cout << text << std::flush;
  }

  void handle(std::string line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.pop_back();
    }
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) {
      return;  // blank line
    }
    line.erase(0, first);
    std::vector<std::string> words;
    {
      std::istringstream in(line);
      std::string word;
      while (in >> word) {
        words.push_back(word);
      }
    }
    std::string normalized;
    for (const auto& word : words) {
      normalized += (normalized.empty() ? "" : " ") + word;
    }
    try {
      apply(words);
      report("ok " + normalized);
    } catch (const std::exception& e) {
      report("error " + normalized + ": " + e.what());
    }
  }

  int32_t broker_arg(std::string_view text, bool allow_all) const {
    return static_cast<int32_t>(number_arg(text, "BROKERID", allow_all ? -1 : 1, brokers_));
  }

  void apply(const std::vector<std::string>& w) {
    const std::string& cmd = w[0];
    const auto need = [&](std::size_t min, std::size_t max, const char* usage) {
      if (w.size() < min + 1 || w.size() > max + 1) {
        throw std::invalid_argument(std::string("usage: ") + usage);
      }
    };
    if (cmd == "ping") {
      need(0, 0, "ping");
    } else if (cmd == "broker-down" || cmd == "broker-up") {
      need(1, 1, "broker-down|broker-up BROKERID");
      const int32_t id = broker_arg(w[1], true);
      check(cmd == "broker-down" ? rd_kafka_mock_broker_set_down(mcluster_, id)
                                 : rd_kafka_mock_broker_set_up(mcluster_, id),
            cmd);
    } else if (cmd == "all-down" || cmd == "all-up") {
      need(0, 0, "all-down|all-up");
      for (int32_t id = 1; id <= brokers_; ++id) {
        check(cmd == "all-down" ? rd_kafka_mock_broker_set_down(mcluster_, id)
                                : rd_kafka_mock_broker_set_up(mcluster_, id),
              cmd + " (broker " + std::to_string(id) + ")");
      }
    } else if (cmd == "push-errors") {
      if (w.size() < 3) {
        throw std::invalid_argument("usage: push-errors APIKEY ERR [ERR...]");
      }
      const int16_t api_key = api_key_arg(w[1]);
      std::vector<rd_kafka_resp_err_t> errors;
      for (std::size_t i = 2; i < w.size(); ++i) {
        errors.push_back(error_arg(w[i]));
      }
      rd_kafka_mock_push_request_errors_array(mcluster_, api_key, errors.size(), errors.data());
    } else if (cmd == "broker-push-errors") {
      if (w.size() < 4) {
        throw std::invalid_argument(
            "usage: broker-push-errors BROKERID APIKEY ERR:RTT_MS [ERR:RTT_MS...]");
      }
      const int32_t id = broker_arg(w[1], false);
      const int16_t api_key = api_key_arg(w[2]);
      std::vector<std::pair<rd_kafka_resp_err_t, int>> entries;
      for (std::size_t i = 3; i < w.size(); ++i) {
        const auto colon = w[i].rfind(':');
        if (colon == std::string::npos) {
          entries.emplace_back(error_arg(w[i]), 0);
        } else {
          entries.emplace_back(
              error_arg(std::string_view(w[i]).substr(0, colon)),
              static_cast<int>(number_arg(std::string_view(w[i]).substr(colon + 1), "RTT_MS", 0,
                                          3600000)));
        }
      }
      // Variadic API: push one (err, rtt) pair per call; the stack keeps the order.
      for (const auto& [err, rtt] : entries) {
        check(rd_kafka_mock_broker_push_request_error_rtts(mcluster_, id, api_key, 1, err, rtt),
              cmd);
      }
    } else if (cmd == "clear-errors") {
      need(1, 1, "clear-errors APIKEY");
      rd_kafka_mock_clear_request_errors(mcluster_, api_key_arg(w[1]));
    } else if (cmd == "topic-error") {
      need(2, 2, "topic-error TOPIC ERR");
      rd_kafka_mock_topic_set_error(mcluster_, w[1].c_str(), error_arg(w[2]));
    } else if (cmd == "partition-leader") {
      need(3, 3, "partition-leader TOPIC PARTITION BROKERID");
      const auto partition = static_cast<int32_t>(number_arg(w[2], "PARTITION", 0, 100000));
      check(rd_kafka_mock_partition_set_leader(mcluster_, w[1].c_str(), partition,
                                               broker_arg(w[3], true)),
            cmd);
    } else if (cmd == "topic-create") {
      need(3, 3, "topic-create TOPIC PARTITIONS REPLICATION");
      check(rd_kafka_mock_topic_create(
                mcluster_, w[1].c_str(),
                static_cast<int>(number_arg(w[2], "PARTITIONS", 1, 100000)),
                static_cast<int>(number_arg(w[3], "REPLICATION", 1, brokers_))),
            cmd);
    } else if (cmd == "rtt") {
      need(2, 2, "rtt BROKERID MS");
      check(rd_kafka_mock_broker_set_rtt(
                mcluster_, broker_arg(w[1], true),
                static_cast<int>(number_arg(w[2], "MS", 0, 3600000))),
            cmd);
    } else {
      throw std::invalid_argument("unknown command '" + cmd +
                                  "' (see txbox-kafka-mock --help)");
    }
  }

  rd_kafka_mock_cluster_t* mcluster_;
  int brokers_;
  std::string path_;
  std::string log_path_;
  int log_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  for (const int port : g_ports) {
    if (!port_free(port)) {
      std::cerr << "txbox-kafka-mock: cannot listen on 127.0.0.1:" << port << ": "
                << std::strerror(errno) << "; stop whatever uses it or choose other --ports"
                << std::endl;
      return 1;
    }
  }

  // Block the stop signals before librdkafka starts threads, so that they
  // inherit the mask and sigwait() below receives the signal.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  char errstr[512] = {};
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set_log_cb(conf, log_to_stderr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    std::cerr << "txbox-kafka-mock: cannot create the librdkafka handle: " << errstr << std::endl;
    return 1;
  }
  rd_kafka_mock_cluster_t* mcluster = rd_kafka_mock_cluster_new(rk, options.brokers);
  if (mcluster == nullptr) {
    std::cerr << "txbox-kafka-mock: cannot start the mock cluster (are the ports free?"
              << (g_ports.empty() ? "" : " check --ports") << ")" << std::endl;
    rd_kafka_destroy(rk);
    return 1;
  }
  const int replication = options.brokers < 3 ? options.brokers : 3;
  for (const auto& [name, partitions] : options.topics) {
    if (const rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mcluster, name.c_str(), partitions, replication)) {
      std::cerr << "txbox-kafka-mock: cannot create topic '" << name
                << "': " << rd_kafka_err2str(err) << std::endl;
      rd_kafka_mock_cluster_destroy(mcluster);
      rd_kafka_destroy(rk);
      return 1;
    }
  }

  Control control(mcluster, options.brokers, options.control);
  if (!options.control.empty()) {
    try {
      control.start();
    } catch (const std::exception& e) {
      std::cerr << "txbox-kafka-mock: " << e.what() << std::endl;
      rd_kafka_mock_cluster_destroy(mcluster);
      rd_kafka_destroy(rk);
      return 1;
    }
  }

  const std::string bootstrap = rd_kafka_mock_cluster_bootstraps(mcluster);
  if (!options.bootstrap_file.empty() && !write_atomically(options.bootstrap_file, bootstrap)) {
    std::cerr << "txbox-kafka-mock: cannot write --bootstrap-file " << options.bootstrap_file
              << ": " << std::strerror(errno) << std::endl;
    control.stop();
    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(rk);
    return 1;
  }
  std::cout << bootstrap << std::endl;

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  std::cerr << "txbox-kafka-mock: stopping on signal " << signal_number << std::endl;
  control.stop();

  rd_kafka_mock_cluster_destroy(mcluster);
  rd_kafka_destroy(rk);
  if (!options.bootstrap_file.empty()) {
    std::remove(options.bootstrap_file.c_str());
  }
  return 0;
}
