// Redis Streams consumer-group reader: XAUTOCLAIM takeover, own pending
// entries after a restart, then XREADGROUP >; dead-letter stream for entries
// delivered too often.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <thread>

#include "connection.hpp"
#include "errors.hpp"
#include "txbox/brokers/wire.hpp"
#include "txbox/redis/redis.hpp"

namespace txbox::redis {

namespace {
using namespace detail;

constexpr milliseconds kCommandTimeout{10000};

struct Entry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
  bool deleted = false;  // still in the PEL but no longer in the stream
};

std::string element_text(const redisReply* reply) {
  if (!reply) return {};
  if (reply->type == REDIS_REPLY_INTEGER) return std::to_string(reply->integer);
  return std::string(text(reply));
}

// [[id, [field, value, ...] or nil], ...]
std::vector<Entry> parse_entries(const redisReply* list) {
  std::vector<Entry> entries;
  if (!list || list->type != REDIS_REPLY_ARRAY) return entries;
  for (size_t i = 0; i < list->elements; ++i) {
    const redisReply* item = list->element[i];
    if (!item || item->type != REDIS_REPLY_ARRAY || item->elements < 1) continue;
    Entry entry;
    entry.id = element_text(item->element[0]);
    const redisReply* fields = item->elements > 1 ? item->element[1] : nullptr;
    if (!fields || fields->type != REDIS_REPLY_ARRAY) {
      entry.deleted = true;
    } else {
      for (size_t f = 0; f + 1 < fields->elements; f += 2)
        entry.fields.emplace_back(element_text(fields->element[f]), element_text(fields->element[f + 1]));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

int64_t id_millis(const std::string& id) {
  int64_t ms = 0;
  std::from_chars(id.data(), id.data() + id.size(), ms);
  return ms;
}

// Entries written before the rename carry the key in the field `key`: read
// it when there is no `message-key`.
brokers::Message to_message(const Entry& entry) {
  brokers::Message m;
  std::optional<std::string> legacy_key;
  for (const auto& [name, value] : entry.fields) {
    if (name == wire::kMessageId) {
      m.message_id = value;
    } else if (name == wire::kMessageKey) {
      m.key = value;
    } else if (name == wire::kLegacyKeyField && !legacy_key) {
      legacy_key = value;
    } else if (name == wire::kPayloadField) {
      m.payload = value;
    } else if (name == wire::kHeadersField) {
      auto json = nlohmann::ordered_json::parse(value, nullptr, false);
      if (json.is_object()) {
        for (const auto& [hname, hvalue] : json.items())
          m.headers.emplace_back(hname, hvalue.is_string() ? hvalue.get<std::string>() : hvalue.dump());
      } else {
        m.headers.emplace_back(name, value);  // not ours: keep it verbatim
      }
    } else {
      m.headers.emplace_back(name, value);  // a field another producer added (or a dlq-* field)
    }
  }
  if (legacy_key) {
    if (m.key)
      m.headers.emplace_back(wire::kLegacyKeyField, *legacy_key);  // not the key: an ordinary field
    else
      m.key = std::move(legacy_key);
  }
  return m;
}

// The fields of a dead letter's message: as the publisher writes them,
// without the dead-letter headers of an earlier death (replaced).
std::vector<std::pair<std::string, std::string>> to_fields(const brokers::Message& m) {
  std::vector<std::pair<std::string, std::string>> fields{{std::string(wire::kMessageId), m.message_id}};
  if (m.key) fields.emplace_back(wire::kMessageKey, *m.key);
  fields.emplace_back(wire::kPayloadField, m.payload);
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (const auto& [name, value] : m.headers)
    if (!wire::is_dead_letter_header(name)) object[name] = value;
  fields.emplace_back(wire::kHeadersField,
                      object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  return fields;
}

class RedisConsumer final : public brokers::Consumer {
 public:
  RedisConsumer(Endpoint endpoint, ConsumerOptions options)
      : endpoint_(std::move(endpoint)), options_(std::move(options)) {
    Failure failure;
    if (!connect_and_setup(failure)) {
      auto c = classify(failure, options_.stream, endpoint_.address());
      if (c.error_class == brokers::ErrorClass::permanent)
        throw brokers::BrokerError(ErrorKind::config, c.description);
      lost(failure);
    }
  }
  ~RedisConsumer() override { close(); }

  std::optional<brokers::Delivery> poll(milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    if (!buffer_.empty()) return take();
    if (closed_) return std::nullopt;
    // A zero-timeout poll just after the entries of a read that found the
    // stream drained: that read is the answer (nothing more was ready), and
    // asking again costs a round trip (an fsync under appendfsync always:
    // the read moves entries into the group's pending list) during which,
    // under a steady trickle, the next entry arrives. A caller collecting
    // "what is ready" (the inbox consumer's batch) would otherwise go on
    // collecting one entry per round trip while the first one waits. Once
    // only: the next poll asks the server.
    if (timeout <= milliseconds(0) && stream_drained_) {
      stream_drained_ = false;
      return std::nullopt;
    }
    if (!context_) {
      if (Clock::now() < next_connect_) {
        std::this_thread::sleep_until(std::min(deadline, next_connect_));
        return std::nullopt;
      }
      Failure failure;
      if (!connect_and_setup(failure)) {
        lost(failure);
        return std::nullopt;
      }
    }
    try {
      if (Clock::now() >= next_claim_) claim();
      if (buffer_.empty() && read_own_pending_) read_own_pending();
      if (buffer_.empty()) read_new(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
    } catch (const Failure& failure) {
      auto c = classify(failure, options_.stream, endpoint_.address());
      if (failure.kind != Failure::Kind::reply) {
        lost(failure);
      } else if (text_starts(failure.text, "NOGROUP")) {
        group_ready_ = false;  // the stream or group was deleted: create it again
        drop();
      } else if (c.error_class == brokers::ErrorClass::permanent) {
        throw brokers::BrokerError(
            ErrorKind::config,
            fmt::format("Redis consumer of stream '{}': {}", options_.stream, c.description));
      } else {
        spdlog::warn("Redis consumer of stream '{}': {}", options_.stream, c.description);
      }
    }
    if (!buffer_.empty()) return take();
    return std::nullopt;
  }

  void ack(const brokers::Delivery& delivery) override {
    run_or_throw("ack", delivery, [&] {
      auto reply = checked({"XACK", options_.stream, options_.group, delivery.ack_token});
      (void)reply;  // 0 = no longer pending (already acked or dead-lettered): nothing to do
    });
  }

  // One XACK with every entry id (all from this consumer's stream).
  void ack_batch(std::span<const brokers::Delivery> deliveries) override {
    if (deliveries.empty()) return;
    run_or_throw("ack", deliveries.front(), [&] {
      std::vector<std::string> argv{"XACK", options_.stream, options_.group};
      for (const auto& d : deliveries) argv.push_back(d.ack_token);
      (void)checked(argv);
    });
  }

  bool dead_letter(const brokers::Delivery& delivery, const std::string& reason) override {
    run_or_throw("dead-lettering", delivery, [&] {
      move_to_dead_letters(delivery.ack_token, to_fields(delivery.message),
                           {.error = reason,
                            .error_class = std::string(wire::kClassHandler),
                            .attempts = delivery.delivery_attempt});
    });
    return true;
  }

  void close() override {
    closed_ = true;
    buffer_.clear();
    context_.reset();
  }

 private:
  static bool text_starts(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

  brokers::Delivery take() {
    auto d = std::move(buffer_.front());
    buffer_.pop_front();
    return d;
  }

  template <typename F>
  void run_or_throw(const char* what, const brokers::Delivery& delivery, F&& f) {
    Failure failure;
    if (closed_)
      throw brokers::BrokerError(
          ErrorKind::internal,
          fmt::format("Redis consumer of stream '{}' is closed: create a new one to {} "
                      "entry {}",
                      options_.stream, what, delivery.ack_token));
    if (!context_ && !connect_and_setup(failure)) {
      lost(failure);
    } else {
      try {
        f();
        return;
      } catch (const Failure& e) {
        failure = e;
        if (failure.kind != Failure::Kind::reply) lost(failure);
      }
    }
    auto c = classify(failure, options_.stream, endpoint_.address());
    throw brokers::BrokerError(
        c.error_class != brokers::ErrorClass::permanent ? ErrorKind::unavailable
                                                        : ErrorKind::permanent,
        fmt::format("{} of entry {} on stream '{}' failed: {}; the entry stays pending and "
                    "is delivered again",
                    what, delivery.ack_token, options_.stream, c.description));
  }

  // Sends one command; throws Failure on an I/O error or an error reply.
  ReplyPtr checked(const std::vector<std::string>& argv, milliseconds timeout = kCommandTimeout) {
    Failure failure;
    set_timeout(context_.get(), timeout);
    auto reply = command(context_.get(), argv, failure);
    if (!reply) throw failure;
    if (is_error(reply.get())) throw reply_failure(reply.get());
    return reply;
  }

  bool connect_and_setup(Failure& failure) {
    context_ = connect(endpoint_, kCommandTimeout, failure);
    if (!context_) {
      next_connect_ = Clock::now() + connect_delay_;
      connect_delay_ = std::min(connect_delay_ * 2, milliseconds(2000));
      return false;
    }
    try {
      if (!group_ready_) {
        Failure f;
        auto reply = command(context_.get(), {"XGROUP", "CREATE", options_.stream, options_.group, "0", "MKSTREAM"}, f);
        if (!reply) throw f;
        if (is_error(reply.get()) && !text(reply.get()).starts_with("BUSYGROUP")) throw reply_failure(reply.get());
        group_ready_ = true;
      }
    } catch (const Failure& f) {
      failure = f;
      context_.reset();
      return false;
    }
    connect_delay_ = milliseconds(100);
    // Everything this consumer had been given is still pending: read it again.
    buffer_.clear();
    stream_drained_ = false;
    read_own_pending_ = true;
    pending_cursor_.assign(1, '0');  // (not = "0": GCC 12 -Wrestrict false positive)
    if (down_) {
      down_ = false;
      spdlog::info("Redis consumer of stream '{}': connected to {} again", options_.stream, endpoint_.address());
    }
    return true;
  }

  void drop() { context_.reset(); }

  void lost(const Failure& failure) {
    drop();
    if (next_connect_ < Clock::now()) next_connect_ = Clock::now() + milliseconds(100);
    if (!down_) {
      down_ = true;
      spdlog::warn("Redis consumer of stream '{}': {}; reconnecting", options_.stream,
                   classify(failure, options_.stream, endpoint_.address()).description);
    }
  }

  // Delivery counts of this consumer's pending entries between two ids.
  std::map<std::string, int> delivery_counts(const std::string& first, const std::string& last, size_t n) {
    std::map<std::string, int> counts;
    auto reply = checked({"XPENDING", options_.stream, options_.group, first, last, std::to_string(n + 1000),
                          options_.consumer_name});
    for (size_t i = 0; i < reply->elements; ++i) {
      const redisReply* row = reply->element[i];
      if (row && row->type == REDIS_REPLY_ARRAY && row->elements >= 4)
        counts[element_text(row->element[0])] = static_cast<int>(row->element[3]->integer);
    }
    return counts;
  }

  // Entries delivered again (claimed or own pending): dead-letter those over
  // the limit, queue the others with their delivery count.
  void deliver_again(std::vector<Entry> entries) {
    if (entries.empty()) return;
    auto counts = delivery_counts(entries.front().id, entries.back().id, entries.size());
    for (auto& entry : entries) {
      if (entry.deleted) {  // trimmed or deleted while pending: nothing to deliver
        checked({"XACK", options_.stream, options_.group, entry.id});
        continue;
      }
      auto it = counts.find(entry.id);
      int attempt = it == counts.end() ? 2 : it->second;
      if (attempt > options_.max_deliveries) {
        move_to_dead_letters(
            entry.id, entry.fields,
            {.error = fmt::format("delivered {} times, more than max_deliveries ({}) without an ack", attempt,
                                  options_.max_deliveries),
             .error_class = std::string(wire::kClassMaxDeliveries),
             .attempts = attempt - 1});  // the deliveries handed out, not this one
        continue;
      }
      queue(entry, attempt);
    }
  }

  void queue(const Entry& entry, int attempt) {
    brokers::Delivery d;
    d.message = to_message(entry);
    d.message.destination = options_.stream;
    d.source = options_.stream;
    d.offset = id_millis(entry.id);
    d.ack_token = entry.id;
    d.delivery_attempt = attempt;
    buffer_.push_back(std::move(d));
  }

  void claim() {
    auto reply = checked({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer_name,
                          std::to_string(options_.claim_idle.count()), claim_cursor_, "COUNT",
                          std::to_string(options_.count)});
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) return;
    claim_cursor_ = element_text(reply->element[0]);
    auto entries = parse_entries(reply->element[1]);
    if (!entries.empty())
      spdlog::info("Redis consumer of stream '{}': took over {} entries idle for more than {} ms", options_.stream,
                   entries.size(), options_.claim_idle.count());
    // The whole PEL was scanned: wait before scanning again.
    if (claim_cursor_ == "0-0")
      next_claim_ = Clock::now() + std::clamp(options_.claim_idle / 2, milliseconds(10), milliseconds(5000));
    deliver_again(std::move(entries));
  }

  void read_own_pending() {
    auto reply = checked({"XREADGROUP", "GROUP", options_.group, options_.consumer_name, "COUNT",
                          std::to_string(options_.count), "STREAMS", options_.stream, pending_cursor_});
    std::vector<Entry> entries;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 && reply->element[0]->elements > 1)
      entries = parse_entries(reply->element[0]->element[1]);
    if (entries.empty()) {
      read_own_pending_ = false;
      return;
    }
    pending_cursor_ = entries.back().id;
    deliver_again(std::move(entries));
  }

  void read_new(milliseconds left) {
    std::vector<std::string> argv{"XREADGROUP", "GROUP", options_.group, options_.consumer_name,
                                  "COUNT", std::to_string(options_.count)};
    auto block = std::min(options_.block, left);
    if (block >= milliseconds(1)) argv.insert(argv.end(), {"BLOCK", std::to_string(block.count())});
    argv.insert(argv.end(), {"STREAMS", options_.stream, ">"});
    auto reply = checked(argv, block + kCommandTimeout);
    stream_drained_ = false;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 || reply->element[0]->elements < 2) return;
    const auto entries = parse_entries(reply->element[0]->element[1]);
    stream_drained_ = !entries.empty() && entries.size() < static_cast<size_t>(options_.count);
    for (const auto& entry : entries) queue(entry, 1);
  }

  // XADD to the dead-letter stream and XACK, atomically (MULTI/EXEC). The
  // entry keeps its fields (except earlier dead-letter fields); `letter` (its
  // destination and position filled in here) adds the dlq-* fields.
  void move_to_dead_letters(const std::string& id, const std::vector<std::pair<std::string, std::string>>& fields,
                            wire::DeadLetter letter) {
    letter.original_destination = options_.stream;
    letter.original_position = id;
    std::vector<std::string> xadd{"XADD", dead_letter_stream(), "*"};
    for (const auto& [name, value] : fields)
      if (!wire::is_dead_letter_header(name)) xadd.insert(xadd.end(), {name, value});
    for (auto& [name, value] : wire::dead_letter_headers(letter)) {
      xadd.push_back(std::move(name));
      xadd.push_back(std::move(value));
    }
    set_timeout(context_.get(), kCommandTimeout);
    append(context_.get(), {"MULTI"});
    append(context_.get(), xadd);
    append(context_.get(), {"XACK", options_.stream, options_.group, id});
    append(context_.get(), {"EXEC"});
    std::optional<Failure> error;
    for (int i = 0; i < 4; ++i) {
      Failure failure;
      auto reply = get_reply(context_.get(), failure);
      if (!reply) throw failure;  // the connection is unusable
      if (is_error(reply.get()) && !error) error = reply_failure(reply.get());
      if (i == 3 && !error && reply->type == REDIS_REPLY_ARRAY)
        for (size_t e = 0; e < reply->elements; ++e)
          if (is_error(reply->element[e]) && !error) error = reply_failure(reply->element[e]);
    }
    if (error) throw *error;
    spdlog::warn("Redis consumer of stream '{}': entry {} moved to dead-letter stream '{}': {}", options_.stream, id,
                 dead_letter_stream(), letter.error);
  }

  const std::string& dead_letter_stream() const { return options_.dead_letter_stream; }

  const Endpoint endpoint_;
  const ConsumerOptions options_;
  ContextPtr context_;
  bool closed_ = false, down_ = false, group_ready_ = false;
  Clock::time_point next_connect_{}, next_claim_{};
  milliseconds connect_delay_{100};
  bool read_own_pending_ = true;
  // The last XREADGROUP of new entries returned some, but fewer than
  // `count`: the stream had nothing more at that moment (see poll()).
  bool stream_drained_ = false;
  std::string pending_cursor_ = "0";
  std::string claim_cursor_ = "0-0";
  std::deque<brokers::Delivery> buffer_;
};

}  // namespace

std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url, const ConsumerOptions& options) {
  auto endpoint = parse_endpoint(url, {});
  auto bad = [](const std::string& why) {
    throw txbox::UsageError(fmt::format("invalid Redis consumer options: {}", why));
  };
  if (options.stream.empty()) bad("stream is empty: name the stream to read");
  if (options.group.empty()) bad("group is empty: name the consumer group");
  if (options.consumer_name.empty()) bad("consumer_name is empty: give each consumer process a stable, unique name");
  if (options.count < 1) bad(fmt::format("count is {}: use at least 1", options.count));
  if (options.max_deliveries < 1) bad(fmt::format("max_deliveries is {}: use at least 1", options.max_deliveries));
  if (options.claim_idle < milliseconds(1)) bad("claim_idle must be at least 1 ms");
  if (options.block < milliseconds(0)) bad("block must not be negative");
  ConsumerOptions resolved = options;
  if (resolved.dead_letter_stream.empty()) resolved.dead_letter_stream = options.stream + ".dlq";
  if (resolved.dead_letter_stream == resolved.stream) bad("dead_letter_stream must differ from stream");
  return std::make_unique<RedisConsumer>(std::move(endpoint), std::move(resolved));
}

// The factory the broker registry calls (brokers::open_consumer).
std::unique_ptr<brokers::Consumer> make_consumer(const brokers::BrokerUrl& url,
                                                 const brokers::Subscription& subscription) {
  brokers::require_no_properties("the Redis consumer", subscription.properties);
  ConsumerOptions options;
  options.stream = subscription.source;
  options.group = subscription.group;
  options.consumer_name = subscription.member;
  if (options.consumer_name.empty()) {
    // Stable across restarts on this host, so a restarted consumer first
    // reads its own pending entries (in order) instead of waiting for
    // another member to claim them.
    char host[256] = "consumer";
    gethostname(host, sizeof host - 1);
    options.consumer_name = host;
  }
  return make_consumer(url, options);
}

}  // namespace txbox::redis
