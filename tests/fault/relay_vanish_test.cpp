// A relay host that vanishes without closing its sockets (a network
// namespace whose link goes down) gives its lanes up within seconds, not
// after the server's default keepalive of about two hours.
#include <unistd.h>

#include <csignal>
#include <fstream>

#include "fault_support.hpp"
#include "support/private_pg.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

// A network namespace joined to the root one by a veth pair:
// host side HOST_IP/30, namespace side NS_IP/30.
class NetNamespace {
 public:
  NetNamespace() {
    const int id = getpid() % 200 + 20;
    name_ = fmt::format("txbox{}", getpid());
    host_if_ = fmt::format("txh{}", getpid() % 100000);
    ns_if_ = fmt::format("txn{}", getpid() % 100000);
    host_ip_ = fmt::format("10.231.{}.1", id);
    ns_ip_ = fmt::format("10.231.{}.2", id);
    cidr_ = fmt::format("10.231.{}.0/30", id);
    sh(fmt::format("ip netns add {0} && ip link add {1} type veth peer name {2} && ip link set {2} netns {0} && "
                   "ip addr add {3}/30 dev {1} && ip link set {1} up && "
                   "ip netns exec {0} ip addr add {4}/30 dev {2} && ip netns exec {0} ip link set {2} up && "
                   "ip netns exec {0} ip link set lo up",
                   name_, host_if_, ns_if_, host_ip_, ns_ip_));
  }
  ~NetNamespace() {
    test::run({"/bin/sh", "-c", fmt::format("ip link del {} 2>/dev/null; ip netns del {}", host_if_, name_)});
  }
  // The namespace's host vanishes from the network: no FIN, no RST.
  void cut() { sh(fmt::format("ip netns exec {} ip link set {} down", name_, ns_if_)); }
  std::vector<std::string> exec(std::vector<std::string> argv) const {
    std::vector<std::string> out{"/usr/sbin/ip", "netns", "exec", name_};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }
  const std::string& host_ip() const { return host_ip_; }
  const std::string& ns_ip() const { return ns_ip_; }
  const std::string& cidr() const { return cidr_; }

 private:
  static void sh(const std::string& command) {
    auto r = test::run({"/bin/sh", "-c", command});
    if (r.exit_code != 0)
      FAIL("network namespace setup failed (this test needs root and iproute2): " << command << ": " << r.output);
  }
  std::string name_, host_if_, ns_if_, host_ip_, ns_ip_, cidr_;
};

int lanes_held_from(const std::string& url, const std::string& client_addr) {
  return static_cast<int>(test::scalar(
      url, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = "
           "'advisory' AND l.classid = 29816 AND l.objsubid = 2 AND l.granted AND a.client_addr = '" +
               client_addr + "'"));
}

}  // namespace

TEST_CASE("a relay host that vanishes gives its lanes up within seconds: another relay finishes its work",
          "[fault][netns]") {
  test::PrivatePostgres pg;
  NetNamespace ns;
  pg.listen_also(ns.host_ip(), ns.cidr());
  auto url = pg.create_database("vanish");
  auto topic = test::unique_name("orders");
  constexpr int kMessages = 4000, kKeys = 400;
  test::fill_outbox(url, topic, kMessages, kKeys);
  const std::string db = url.substr(url.rfind('/') + 1);
  // Relay A inside the namespace: it reaches PostgreSQL over the veth but
  // no Kafka (nothing listens there), so it holds its lanes with its
  // batches failing. Short keepalives keep the test quick; the relay sets
  // the same values on the server's side of its sessions.
  const std::string remote_url = fmt::format(
      "postgresql://postgres@{}:{}/{}?keepalives_idle=2&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=4000",
      ns.host_ip(), pg.port(), db);
  test::Process a(ns.exec({test::binary_path("txbox-relay"), "--database-url", remote_url, "--broker-url",
                           "kafka://127.0.0.1:9", "--poll-interval", "200", "--publish-timeout", "2000"}),
                  "/tmp/" + topic + "-a.log");
  REQUIRE(test::wait_for([&] { return lanes_held_from(url, ns.ns_ip()) == 256; },
                         60s));
  // Relay B on this host, with the broker: it gets its share and drains it;
  // A's share waits.
  test::Process b(test::relay_command(url, test::kafka_bootstrap()),
                  "/tmp/" + topic + "-b.log");
  REQUIRE(test::wait_for([&] { return lanes_held_from(url, "127.0.0.1") >= 100; }, 60s));
  std::this_thread::sleep_for(3s);
  const long long left = test::outbox_rows(url);
  INFO("rows left in the vanishing relay's lanes: " << left);
  REQUIRE(left > 0);
  ns.cut();
  const auto cut_at = std::chrono::steady_clock::now();
  // The server notices the dead sessions by keepalive and frees their locks;
  // B takes every lane and finishes the drain.
  REQUIRE(b.wait(120s) == std::optional<int>(0));
  const auto took = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - cut_at);
  INFO("the survivor finished " << took.count() << " s after the host vanished");
  CHECK(took < 90s);
  CHECK(test::outbox_rows(url) == 0);
  a.signal(SIGKILL);
  test::consume_into_effects(url, test::kafka_bootstrap(), topic, kMessages);
  test::check_effects(url, kMessages);
}

