#include "errors.hpp"

#include <fmt/format.h>

namespace txbox::rabbitmq::detail {

using brokers::ErrorClass;

namespace {
bool contains(std::string_view text, std::string_view needle) {
  return text.find(needle) != std::string_view::npos;
}

const char* reply_name(int code) {
  switch (code) {
    case 200: return "REPLY_SUCCESS";
    case 311: return "CONTENT_TOO_LARGE";
    case 312: return "NO_ROUTE";
    case 313: return "NO_CONSUMERS";
    case 320: return "CONNECTION_FORCED";
    case 402: return "INVALID_PATH";
    case 403: return "ACCESS_REFUSED";
    case 404: return "NOT_FOUND";
    case 405: return "RESOURCE_LOCKED";
    case 406: return "PRECONDITION_FAILED";
    case 501: return "FRAME_ERROR";
    case 502: return "SYNTAX_ERROR";
    case 503: return "COMMAND_INVALID";
    case 504: return "CHANNEL_ERROR";
    case 505: return "UNEXPECTED_FRAME";
    case 506: return "RESOURCE_ERROR";
    case 530: return "NOT_ALLOWED";
    case 540: return "NOT_IMPLEMENTED";
    case 541: return "INTERNAL_ERROR";
    default: return "AMQP error";
  }
}
}  // namespace

ErrorClass classify(const Failure& failure) noexcept {
  switch (failure.cause) {
    case Cause::returned:
    case Cause::refused:
      return ErrorClass::permanent;
    case Cause::nack:
    case Cause::timeout:
      return ErrorClass::transient;
    case Cause::unreachable:
    case Cause::blocked:
      return ErrorClass::outage;
    case Cause::library:
      // Only an encoding failure is about the message; everything else means
      // the connection is gone or not answering.
      return failure.code == AMQP_STATUS_TABLE_TOO_BIG ? ErrorClass::permanent : ErrorClass::outage;
    case Cause::channel_closed:
      switch (failure.code) {
        case 311:  // CONTENT_TOO_LARGE
        case 403:  // ACCESS_REFUSED (on an exchange or queue)
        case 404:  // NOT_FOUND (exchange)
        case 501:  // FRAME_ERROR (frame too large)
          return ErrorClass::permanent;
        case 406:  // PRECONDITION_FAILED: permanent only for a message over max_message_size
          return contains(failure.text, "max size") || contains(failure.text, "larger than")
                     ? ErrorClass::permanent
                     : ErrorClass::transient;
        default:  // 405 RESOURCE_LOCKED, 541 INTERNAL_ERROR, ...
          return ErrorClass::transient;
      }
    case Cause::connection_closed:
      switch (failure.code) {
        case 501:  // FRAME_ERROR
        case 502:  // SYNTAX_ERROR
        case 503:  // COMMAND_INVALID
        case 504:  // CHANNEL_ERROR
        case 505:  // UNEXPECTED_FRAME
          return ErrorClass::transient;  // a protocol error on this connection, not a broker outage
        default:  // 320 CONNECTION_FORCED (shutdown, closed by an operator), 541, 403/530 at login, ...
          return ErrorClass::outage;
      }
  }
  return ErrorClass::transient;
}

Failure failure_of(const amqp_rpc_reply_t& reply, std::string_view what) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return {Cause::library, 0, fmt::format("{}: no error", what)};
    case AMQP_RESPONSE_NONE:
      return {Cause::library, AMQP_STATUS_UNEXPECTED_STATE,
              fmt::format("{}: no reply from the broker (missing RPC reply type)", what)};
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return {Cause::library, reply.library_error,
              fmt::format("{}: {}", what, amqp_error_string2(reply.library_error))};
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
        return {Cause::connection_closed, m->reply_code,
                fmt::format("{}: {}", what, to_string(m->reply_text))};
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
        return {Cause::channel_closed, m->reply_code,
                fmt::format("{}: {}", what, to_string(m->reply_text))};
      }
      return {Cause::library, AMQP_STATUS_UNEXPECTED_STATE,
              fmt::format("{}: unexpected method 0x{:08x} from the broker", what, reply.reply.id)};
  }
  return {Cause::library, AMQP_STATUS_UNEXPECTED_STATE, std::string(what)};
}

std::string describe(const Failure& failure) {
  switch (failure.cause) {
    case Cause::library:
      if (failure.code == AMQP_STATUS_TABLE_TOO_BIG) {
        return failure.text + ": the headers do not fit in one AMQP frame; send fewer/smaller headers";
      }
      return failure.text + " (connection dropped; will be retried once reconnected)";
    case Cause::unreachable:
      return failure.text + "; will be retried once the broker is reachable";
    case Cause::blocked:
      return failure.text +
             ": RabbitMQ stops reading from publishers while a memory or disk alarm is raised; free memory or "
             "disk on the broker (rabbitmq-diagnostics alarms); will be retried once it unblocks";
    case Cause::nack:
      return failure.text + ": the broker refused the message (basic.nack); will be retried";
    case Cause::timeout:
    case Cause::returned:
    case Cause::refused:
      return failure.text;
    case Cause::channel_closed:
    case Cause::connection_closed: {
      std::string hint;
      switch (failure.code) {
        case 403: hint = "grant the user write permission on it in this vhost"; break;
        case 404: hint = "declare it (or fix the destination)"; break;
        case 320: hint = "the broker closed the connection; will be retried once reconnected"; break;
        case 405: hint = "the resource is locked by another connection; will be retried"; break;
        default:
          switch (classify(failure)) {
            case ErrorClass::permanent: hint = "fix the message or the broker limits; not retried"; break;
            case ErrorClass::outage: hint = "will be retried once the broker is back"; break;
            case ErrorClass::transient: hint = "will be retried"; break;
          }
      }
      if (failure.cause == Cause::connection_closed && failure.code == 403) {
        hint = "check the user, password and the user's permissions on the vhost; will be retried";
      }
      return fmt::format("{} ({} {}): {}", failure.text, reply_name(failure.code), failure.code, hint);
    }
  }
  return failure.text;
}

std::string to_string(amqp_bytes_t bytes) {
  if (bytes.len == 0 || bytes.bytes == nullptr) return {};
  return std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

amqp_bytes_t as_bytes(const std::string& s) noexcept {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());
  return b;
}

amqp_table_entry_t utf8_entry(amqp_bytes_t key, amqp_bytes_t value) noexcept {
  amqp_table_entry_t e{};
  e.key = key;
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = value;
  return e;
}

}  // namespace txbox::rabbitmq::detail
