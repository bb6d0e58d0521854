#include "txbox/brokers/message.hpp"

#include "txbox/brokers/broker.hpp"

namespace txbox::brokers {

const char* to_string(ErrorClass error_class) noexcept {
  switch (error_class) {
    case ErrorClass::transient:
      return "transient";
    case ErrorClass::permanent:
      return "permanent";
    case ErrorClass::outage:
      return "outage";
  }
  return "unknown";
}

void require_no_properties(std::string_view who, const Properties& properties) {
  if (properties.empty()) return;
  throw txbox::ConfigError(std::string(who) + " takes no client properties (got '" + properties.begin()->first + "')",
                           "set connection options in the broker URL's query instead");
}

}  // namespace txbox::brokers
