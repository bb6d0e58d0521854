#pragma once
// Parsing of broker URLs such as kafka://host:9092,host2:9092 or
// amqp://user:pass@host:5672/vhost.

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace txbox::brokers {

struct HostPort {
  std::string host;
  int port = 0;  // 0 = the scheme's default
};

struct BrokerUrl {
  std::string scheme;  // lower case: kafka, amqp, nats, redis
  std::string user;
  std::string password;
  std::vector<HostPort> hosts;
  std::string path;                           // without the leading '/'
  std::map<std::string, std::string> query;   // ?a=b&c=d
  std::string original;  // as given: holds the password; never print it
  std::string redacted;  // `original` with the credentials replaced by "***": for messages

  // "host:port,host:port" with default ports filled in.
  std::string host_list(int default_port) const;
};

// Throws txbox::UsageError with a message that names the problem and
// shows the expected form (with the credentials redacted). The user
// information runs to the last '@' before the query, so a password with an
// unencoded '@' or '/' is taken whole.
BrokerUrl parse_broker_url(std::string_view url);

// `url` with whatever sits between "://" and its last '@' replaced by "***".
std::string redact_broker_url(std::string_view url);

}  // namespace txbox::brokers
