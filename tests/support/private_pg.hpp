#pragma once
// A private PostgreSQL server for one fault test (scripts/pg.sh in a temp
// dir, on a free loopback port), so the test can stop and restart it
// without disturbing the shared test server.

#include <string>

namespace txbox::test {

class PrivatePostgres {
 public:
  PrivatePostgres();   // initdb + start; throws with the log on failure
  ~PrivatePostgres();  // stops it and removes the directory
  PrivatePostgres(const PrivatePostgres&) = delete;
  PrivatePostgres& operator=(const PrivatePostgres&) = delete;

  // URL of a new, migrated database on this server.
  std::string create_database(const std::string& prefix);
  void stop();   // fast shutdown: clients see their connections drop
  void start();
  // Also listens on `address` and lets clients from `cidr` in (trust);
  // restarts the server.
  void listen_also(const std::string& address, const std::string& cidr);
  int port() const { return port_; }

 private:
  std::string dir_;
  int port_;
  std::string admin_url_;
};

// A free TCP port on 127.0.0.1 (bound once and released).
int free_port();

}  // namespace txbox::test
