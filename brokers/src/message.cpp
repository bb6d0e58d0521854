#include "txbox/brokers/message.hpp"

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

}  // namespace txbox::brokers
