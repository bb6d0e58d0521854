// A connection pooler in transaction mode would share one server session's
// lane locks between relay workers: it is refused with a clear error.
#include <unistd.h>

#include <fstream>

#include "fault_support.hpp"
#include "support/private_pg.hpp"

namespace test = txbox::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

TEST_CASE("a relay behind a transaction-pooling PgBouncer is refused with a clear error", "[fault][pgbouncer]") {
  auto url = test::create_database("pooled");
  const int port = test::free_port();
  char tmpl[] = "/tmp/txbox-pgbouncer-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string db = url.substr(url.rfind('/') + 1);
  const std::string admin = test::pg_admin_url();
  const std::string pg_port = admin.substr(admin.rfind(':') + 1, admin.rfind('/') - admin.rfind(':') - 1);
  {
    std::ofstream ini(dir + "/pgbouncer.ini");
    ini << "[databases]\n* = host=127.0.0.1 port=" << pg_port << "\n"
        << "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port << "\nauth_type = trust\n"
        << "auth_file = " << dir << "/users.txt\npool_mode = transaction\ndefault_pool_size = 2\n"
        << "max_client_conn = 100\nunix_socket_dir =\nlogfile = " << dir << "/pgbouncer.log\n"
        << "ignore_startup_parameters = extra_float_digits\n";
    std::ofstream(dir + "/users.txt") << "\"postgres\" \"\"\n";
  }
  test::run({"/bin/chown", "-R", "postgres:", dir});
  test::Process pgbouncer({"/usr/sbin/pgbouncer", "-u", "postgres", dir + "/pgbouncer.ini"}, dir + "/out.log");
  const std::string pooled = fmt::format("postgresql://postgres@127.0.0.1:{}/{}", port, db);
  REQUIRE(test::wait_for([&] { return test::run({"/usr/bin/psql", pooled, "-Atc", "SELECT 1"}).exit_code == 0; },
                         30s));
  auto r = test::run({test::binary_path("txbox-relay"), "--database-url", pooled, "--broker-url",
                      "kafka://" + test::kafka_bootstrap(), "--workers", "4"},
                     120s);
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("PgBouncer"));
  CHECK_THAT(r.output, Contains("session mode"));
  CHECK(test::count_lines_with(r.output, "error") == 1);
}
