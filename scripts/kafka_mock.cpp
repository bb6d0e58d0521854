// txbox-kafka-mock: a standalone Kafka "cluster" for tests, built on
// librdkafka's in-process mock cluster. Real clients (librdkafka, kcat)
// connect over loopback TCP.
//
//   txbox-kafka-mock [--brokers N] [--ports P1,P2,...] [--topic NAME:PARTITIONS]...
//                    [--partitions 4] [--bootstrap-file PATH]
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

#include <arpa/inet.h>
#include <dlfcn.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
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

namespace {

constexpr const char* kUsage =
    "usage: txbox-kafka-mock [--brokers N] [--ports P1,P2,...] [--topic NAME:PARTITIONS]... "
    "[--partitions 4] [--bootstrap-file PATH]";

struct Options {
  int brokers = 1;
  std::vector<std::pair<std::string, int>> topics;
  std::string bootstrap_file;
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
          << "  --bootstrap-file PATH  write host:port,... there once listening (atomic rename)\n";
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

  const std::string bootstrap = rd_kafka_mock_cluster_bootstraps(mcluster);
  if (!options.bootstrap_file.empty() && !write_atomically(options.bootstrap_file, bootstrap)) {
    std::cerr << "txbox-kafka-mock: cannot write --bootstrap-file " << options.bootstrap_file
              << ": " << std::strerror(errno) << std::endl;
    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(rk);
    return 1;
  }
  std::cout << bootstrap << std::endl;

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  std::cerr << "txbox-kafka-mock: stopping on signal " << signal_number << std::endl;

  rd_kafka_mock_cluster_destroy(mcluster);
  rd_kafka_destroy(rk);
  if (!options.bootstrap_file.empty()) {
    std::remove(options.bootstrap_file.c_str());
  }
  return 0;
}
