#include "support/private_pg.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <pqxx/pqxx>
#include <stdexcept>

#include "support/process.hpp"
#include "support/test_env.hpp"
#include "txbox/outbox/schema.hpp"

namespace txbox::test {

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

namespace {
std::string pg_script() { return std::string(TXBOX_SOURCE_DIR) + "/scripts/pg.sh"; }
}  // namespace

PrivatePostgres::PrivatePostgres() : port_(free_port()) {
  char templ[] = "/tmp/txbox-pg-XXXXXX";
  if (!mkdtemp(templ)) throw std::runtime_error("mkdtemp failed");
  dir_ = templ;
  std::filesystem::permissions(dir_, std::filesystem::perms::all);
  auto r = run({pg_script(), "start", dir_, std::to_string(port_)}, std::chrono::seconds(120));
  if (r.exit_code != 0) throw std::runtime_error("private PostgreSQL did not start: " + r.output);
  admin_url_ = "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres";
}

PrivatePostgres::~PrivatePostgres() {
  run({pg_script(), "stop", dir_}, std::chrono::seconds(60));
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string PrivatePostgres::create_database(const std::string& prefix) {
  std::string name = unique_name(prefix);
  {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction tx(admin);
    tx.exec0("CREATE DATABASE " + tx.quote_name(name));
  }
  std::string url = "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + name;
  pqxx::connection conn(url);
  outbox::migrate(conn);
  return url;
}

void PrivatePostgres::listen_also(const std::string& address, const std::string& cidr) {
  stop();
  auto r = run({"/bin/sh", "-c",
                "echo \"listen_addresses = '127.0.0.1," + address + "'\" >> '" + dir_ +
                    "/data/postgresql.conf' && echo 'host all all " + cidr + " trust' >> '" + dir_ +
                    "/data/pg_hba.conf'"});
  if (r.exit_code != 0) throw std::runtime_error("cannot reconfigure the private PostgreSQL: " + r.output);
  start();
}

void PrivatePostgres::stop() {
  auto r = run({pg_script(), "stop", dir_}, std::chrono::seconds(60));
  if (r.exit_code != 0) throw std::runtime_error("private PostgreSQL did not stop: " + r.output);
}

void PrivatePostgres::start() {
  auto r = run({pg_script(), "start", dir_, std::to_string(port_)}, std::chrono::seconds(120));
  if (r.exit_code != 0) throw std::runtime_error("private PostgreSQL did not restart: " + r.output);
}

}  // namespace txbox::test
