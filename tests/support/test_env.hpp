#pragma once
// Helpers shared by the integration tests: where the servers are (set by
// scripts/test-env.sh) and unique names so tests never share state.

#include <string>

namespace txbox::test {

// Value of an environment variable the test needs; fails the test with a
// message saying how to start the servers when it is missing.
std::string required_env(const char* name);

// libpq connection URL of the test PostgreSQL server (maintenance database).
std::string pg_admin_url();
// Bootstrap servers (host:port,...) of the Kafka mock cluster process.
std::string kafka_bootstrap();
// Broker URLs of the other test servers (scripts/test-env.sh):
std::string rabbitmq_url();  // TXBOX_TEST_RABBITMQ_URL, amqp://guest:guest@127.0.0.1:PORT/
std::string nats_url();      // TXBOX_TEST_NATS_URL, nats://127.0.0.1:PORT
std::string redis_url();     // TXBOX_TEST_REDIS_URL, redis://127.0.0.1:PORT

// A name unique to this process and call: prefix-<pid>-<counter>-<random>.
// Only [a-z0-9_] so it is valid as a database, topic or queue name.
std::string unique_name(const std::string& prefix);

// Creates a fresh database named unique_name(prefix) on the test server and
// returns its URL. With `migrate`, applies txbox's migrations to it.
std::string create_database(const std::string& prefix, bool migrate = true);

// Path of a built binary (txbox-relay, txbox, ...) from the build tree.
std::string binary_path(const std::string& name);

}  // namespace txbox::test
