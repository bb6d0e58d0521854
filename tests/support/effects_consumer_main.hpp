#pragma once
// The command line and signal handling shared by the test consumer programs
// (one per broker): --database-url, --expect and the broker's address here,
// the broker's other options added by each program, then
// run_effects_consumer until --expect rows or SIGTERM/SIGINT.

#include <CLI/CLI.hpp>

#include <csignal>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>

#include "support/effects_consumer.hpp"

namespace txbox::test {

class EffectsConsumerMain {
 public:
  // `broker_option`: the option naming the broker's address (a URL, or
  // Kafka's bootstrap servers), e.g. "--broker-url".
  EffectsConsumerMain(std::string program, const std::string& description, const std::string& broker_option)
      : program_(std::move(program)), app_(description) {
    app_.add_option("--database-url", database_url_)->required();
    app_.add_option(broker_option, broker_)->required();
    app_.add_option("--expect", expect_);
    app_.add_option("--workers", options_.workers, "lanes applying messages in parallel");
    app_.add_option("--max-batch", options_.max_batch, "deliveries per inbox transaction");
  }

  // Where the program adds its broker's options.
  CLI::App& app() { return app_; }

  // Parses the command line, then consumes with the consumer
  // `make_consumer` returns for the broker's address into the inbox
  // `inbox_name` (read after parsing: it may be set by an option) until
  // stopped; returns the process exit code.
  int run(int argc, char** argv, const std::string& inbox_name,
          const std::function<std::unique_ptr<brokers::Consumer>(const std::string& broker)>& make_consumer) {
    CLI11_PARSE(app_, argc, argv);
    std::signal(SIGTERM, request_stop);
    std::signal(SIGINT, request_stop);
    return run_effects_consumer(program_, stop_.get_token(), database_url_, inbox_name, expect_, options_,
                                [&] { return make_consumer(broker_); });
  }

 private:
  // The process's one stop request, made by the signal handler (a static,
  // constructed before main: nothing to construct inside the handler).
  inline static std::stop_source stop_;
  static void request_stop(int) { stop_.request_stop(); }

  std::string program_;
  CLI::App app_;
  std::string database_url_;
  std::string broker_;
  long expect_ = 0;
  consumer::InboxConsumerOptions options_;
};

}  // namespace txbox::test
