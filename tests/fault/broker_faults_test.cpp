// Broker-side faults on a private Kafka mock: the broker process killed and
// restarted on the same ports, a poison message, transient and permanent
// errors injected into Produce requests.
#include <unistd.h>

#include <csignal>
#include <sstream>

#include "fault_support.hpp"
#include "support/kafka_mock.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;

TEST_CASE("broker killed mid-drain under 3 relays and restarted on the same ports 5 s later: nothing lost, "
          "per-key order",
          "[fault]") {
  constexpr int kMessages = 30000, kKeys = 300;
  test::KafkaMock kafka(1);
  auto url = test::create_database("brokerkill");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, kMessages, kKeys);
  test::create_effects_table(url);
  auto log = "/tmp/" + topic + ".log";
  std::vector<std::string> consumer_command{test::binary_path("txbox-test-consumer"), "--database-url",
                                            test::fast_commit(url), "--bootstrap-servers", kafka.bootstrap(),
                                            "--topic", topic, "--group", "billing", "--expect",
                                            std::to_string(kMessages)};
  auto consumer = std::make_unique<test::Process>(consumer_command, log + ".consumer");
  std::vector<std::unique_ptr<test::Process>> relays;
  for (int i = 0; i < 3; ++i)
    relays.push_back(std::make_unique<test::Process>(
        test::relay_command(url, kafka.bootstrap(), {"--workers", "4", "--batch-size", "100", "--publish-timeout", "5000"}),
        log + std::to_string(i)));
  test::wait_for([&] { return test::outbox_rows(url) <= kMessages * 2 / 3; }, 60s);

  // The mock keeps messages in memory only, so before killing it let the
  // consumer read everything the broker has confirmed so far (a real Kafka
  // keeps them on disk): pause the relays, wait for the consumer to go quiet.
  for (auto& relay : relays) relay->signal(SIGSTOP);
  long long seen = -1;
  test::wait_for(
      [&] {
        long long now = test::scalar(url, "SELECT count(*) FROM effects");
        bool quiet = now == seen && now >= kMessages - test::outbox_rows(url);
        seen = now;
        if (!quiet) std::this_thread::sleep_for(2s);
        return quiet;
      },
      120s);
  consumer.reset();  // SIGKILL
  kafka.kill();
  const long long left_at_kill = test::outbox_rows(url);
  for (auto& relay : relays) relay->signal(SIGCONT);  // mid-drain, with the broker gone
  std::this_thread::sleep_for(5s);
  for (auto& relay : relays) CHECK(relay->running());
  kafka.restart();
  consumer = std::make_unique<test::Process>(consumer_command, log + ".consumer");

  for (auto& relay : relays) REQUIRE(relay->wait(4min) == std::optional<int>(0));
  INFO("rows left at the kill: " << left_at_kill);
  CHECK(left_at_kill > 0);
  CHECK(test::outbox_rows(url) == 0);
  CHECK(consumer->wait(4min) == std::optional<int>(0));
  test::check_effects(url, kMessages);
  int unavailable = 0, available = 0;
  for (int i = 0; i < 3; ++i) {
    auto output = test::read_file(log + std::to_string(i));
    // One line per state change, not one per message.
    CHECK(test::count_lines_with(output, "broker unavailable") <= 8);
    unavailable += test::count_lines_with(output, "broker unavailable");
    available += test::count_lines_with(output, "broker available again");
  }
  CHECK(unavailable >= 1);
  CHECK(available >= 1);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
}

TEST_CASE("one poison message among 10,000 is dead-lettered after max attempts while its key waits", "[fault]") {
  constexpr int kMessages = 10000, kKeys = 100;
  test::KafkaMock kafka(1);
  auto url = test::create_database("poison");
  auto topic = test::unique_name("orders");
  // A destination whose only partition has no leader: every publish to it
  // times out, a transient error that never clears.
  kafka.control("topic-create poison 1 1");
  kafka.control("partition-leader poison 0 -1");
  test::fill_outbox(url, topic, kMessages / 2, kKeys);
  long long poison_id;
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    poison_id = tx.exec1("INSERT INTO txbox.outbox (destination, message_key, payload) VALUES "
                         "('poison', 'key-7', 'poison') RETURNING id")[0]
                    .as<long long>();
    tx.commit();
  }
  // The second half, with sequence numbers continuing per key.
  {
    pqxx::connection conn(url);
    txbox::outbox::Outbox outbox;
    std::vector<txbox::outbox::Message> batch;
    for (int i = kMessages / 2; i < kMessages; ++i) {
      std::string key = "key-" + std::to_string(i % kKeys);
      batch.push_back({topic, key, key + ":" + std::to_string(i / kKeys), {}, {}});
    }
    pqxx::work tx(conn);
    outbox.enqueue(tx, batch);
    tx.commit();
  }
  const long long later_rows_of_key =
      test::scalar(url, "SELECT count(*) FROM txbox.outbox WHERE message_key = 'key-7' AND id > " + std::to_string(poison_id));
  auto log = "/tmp/" + topic + ".log";
  test::Process relay(test::relay_command(url, kafka.bootstrap(),
                                          {"--workers", "4", "--batch-size", "100", "--max-attempts", "4", "--max-retry-age", "0s",
                                           "--retry-base", "300", "--retry-cap", "1000", "--publish-timeout",
                                           "5000", "--kafka-property", "message.timeout.ms=1500"}),
                      log);
  // While the poison is being retried, its key's later messages wait in the
  // outbox; every other key drains.
  bool observed = test::wait_for(
      [&] {
        return test::scalar(url, "SELECT coalesce(max(attempts), 0) FROM txbox.outbox WHERE id = " +
                                     std::to_string(poison_id)) >= 2 &&
               test::scalar(url, "SELECT count(*) FROM txbox.outbox WHERE message_key <> 'key-7'") == 0;
      },
      90s);
  CHECK(observed);
  if (observed)
    CHECK(test::scalar(url, "SELECT count(*) FROM txbox.outbox WHERE message_key = 'key-7' AND id > " +
                                std::to_string(poison_id)) == later_rows_of_key);
  REQUIRE(relay.wait(3min) == std::optional<int>(0));
  CHECK(test::outbox_rows(url) == 0);

  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  auto dead = tx.exec("SELECT destination, message_key, attempts, error_class, last_error, payload FROM txbox.dead_letters");
  REQUIRE(dead.size() == 1);
  CHECK(dead[0][0].as<std::string>() == "poison");
  CHECK(dead[0][1].as<std::string>() == "key-7");
  CHECK(dead[0][2].as<int>() == 4);
  CHECK(dead[0][3].as<std::string>() == "transient");
  CHECK_THAT(dead[0][4].as<std::string>(), Catch::Matchers::Contains("gave up after 4 attempts"));
  test::consume_into_effects(url, kafka.bootstrap(), topic, kMessages);
  test::check_effects(url, kMessages);
}

TEST_CASE("injected errors: transient ones are retried and delivered, permanent ones dead-lettered at once", "[fault]") {
  test::KafkaMock kafka(1);
  auto url = test::create_database("inject");
  auto topic = test::unique_name("orders");
  auto command = test::relay_command(url, kafka.bootstrap(), {"--workers", "2", "--batch-size", "50"});

  // Transient: the next Produce requests fail with retriable errors.
  test::fill_outbox(url, topic, 500, 10);
  kafka.control("push-errors Produce NOT_ENOUGH_REPLICAS NOT_LEADER_FOR_PARTITION REQUEST_TIMED_OUT");
  {
    test::Process relay(command, "/tmp/" + topic + ".log");
    REQUIRE(relay.wait(2min) == std::optional<int>(0));
  }
  CHECK(test::outbox_rows(url) == 0);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.dead_letters") == 0);
  test::consume_into_effects(url, kafka.bootstrap(), topic, 500);
  test::check_effects(url, 500);

  // Permanent: the broker answers the Produce request "not authorised";
  // one attempt, then a dead letter.
  auto denied = test::unique_name("denied");
  kafka.control("topic-create " + denied + " 1 1");
  kafka.control("push-errors Produce TOPIC_AUTHORIZATION_FAILED");
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    tx.exec0("INSERT INTO txbox.outbox (destination, message_key, payload) VALUES (" + tx.quote(denied) +
             ", 'k', 'x')");
    tx.commit();
  }
  {
    test::Process relay(command, "/tmp/" + topic + ".log");
    REQUIRE(relay.wait(2min) == std::optional<int>(0));
  }
  CHECK(test::outbox_rows(url) == 0);
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  auto dead = tx.exec1("SELECT attempts, error_class, last_error FROM txbox.dead_letters");
  CHECK(dead[0].as<int>() == 1);
  CHECK(dead[1].as<std::string>() == "permanent");
  CHECK_THAT(dead[2].as<std::string>(), Catch::Matchers::Contains("uthoriz"));
}

namespace {
// CPU seconds (user + system) a process has used so far.
double cpu_seconds(pid_t pid) {
  auto stat = test::read_file("/proc/" + std::to_string(pid) + "/stat");
  auto fields = stat.substr(stat.rfind(')') + 2);
  std::istringstream in(fields);
  std::string skip;
  for (int i = 0; i < 11; ++i) in >> skip;  // fields 3..13
  double utime = 0, stime = 0;
  in >> utime >> stime;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}
}  // namespace

TEST_CASE("broker down at start: the relay waits at near-zero CPU, then resumes by itself", "[fault]") {
  test::KafkaMock kafka(1);
  auto url = test::create_database("downatstart");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, 2000, 20);
  kafka.kill();
  auto log = "/tmp/" + topic + ".log";
  test::Process relay(test::relay_command(url, kafka.bootstrap(),
                                          {"--publish-timeout", "2000", "--outage-backoff-cap", "2000",
                                           "--kafka-property", "message.timeout.ms=1500"}),
                      log);
  std::this_thread::sleep_for(4s);
  REQUIRE(relay.running());
  double before = cpu_seconds(relay.pid());
  std::this_thread::sleep_for(5s);
  double used = cpu_seconds(relay.pid()) - before;
  INFO("CPU seconds used in 5 s of outage: " << used);
  CHECK(used < 0.5);
  CHECK(test::outbox_rows(url) == 2000);
  CHECK(test::scalar(url, "SELECT count(*) FROM txbox.outbox WHERE attempts > 0") == 0);
  kafka.restart();
  REQUIRE(relay.wait(2min) == std::optional<int>(0));
  auto output = test::read_file(log);
  CHECK(test::count_lines_with(output, "broker unavailable") == 1);
  CHECK(test::count_lines_with(output, "broker available again") == 1);
  test::consume_into_effects(url, kafka.bootstrap(), topic, 2000);
  test::check_effects(url, 2000);
}

TEST_CASE("a second signal exits at once and still loses nothing", "[fault]") {
  test::KafkaMock kafka(1);
  auto url = test::create_database("twosignals");
  auto topic = test::unique_name("orders");
  test::fill_outbox(url, topic, 3000, 30);
  auto command = test::relay_command(url, kafka.bootstrap(), {"--workers", "2", "--batch-size", "100",
                                                              "--shutdown-timeout", "60000"});
  {
    test::Process relay(command, "/tmp/" + topic + ".log");
    test::wait_for([&] { return test::outbox_rows(url) < 3000; }, 60s);
    kafka.control("rtt -1 5000");  // batches now wait 5 s for their confirmation
    std::this_thread::sleep_for(500ms);
    relay.signal(SIGTERM);
    std::this_thread::sleep_for(300ms);
    auto signalled = std::chrono::steady_clock::now();
    relay.signal(SIGTERM);
    CHECK(relay.wait(3s) == std::optional<int>(130));
    CHECK(std::chrono::steady_clock::now() - signalled < 3s);
  }
  kafka.control("rtt -1 0");
  CHECK(test::outbox_rows(url) > 0);
  test::Process relay(command, "/tmp/" + topic + ".log");
  REQUIRE(relay.wait(2min) == std::optional<int>(0));
  test::consume_into_effects(url, kafka.bootstrap(), topic, 3000);
  test::check_effects(url, 3000);
}
