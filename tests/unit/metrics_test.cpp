// The metrics core (pure logic): the text exposition format, label caps,
// histograms, lock-free updates from many threads, process metrics.
#include <catch2/catch.hpp>

#include <thread>

#include "txbox/metrics/metrics.hpp"

namespace m = txbox::metrics;
using Catch::Matchers::Contains;

TEST_CASE("metrics: counters, gauges and histograms render in the exposition format 0.0.4", "[unit][metrics]") {
  m::Registry registry;
  auto& published = registry.counter("txbox_relay_messages_published_total", "Messages confirmed and deleted.",
                                     {"destination"});
  published.with({"orders"}).inc(3);
  published.with({"pay\"ments\\\n"}).inc();
  registry.gauge("txbox_relay_workers", "Worker threads.").with({}).set(4);
  auto& delay = registry.histogram("txbox_relay_message_delay_seconds", "Created to deleted.", {0.01, 0.1, 1});
  delay.with({}).observe(0.25);
  delay.with({}).observe(0.5);
  delay.with({}).observe(std::chrono::milliseconds(2500));
  registry.counter("txbox_unused_total", "Never incremented, no labels used: not rendered.", {"destination"});
  CHECK(registry.render() ==
        "# HELP txbox_relay_message_delay_seconds Created to deleted.\n"
        "# TYPE txbox_relay_message_delay_seconds histogram\n"
        "txbox_relay_message_delay_seconds_bucket{le=\"0.01\"} 0\n"
        "txbox_relay_message_delay_seconds_bucket{le=\"0.1\"} 0\n"
        "txbox_relay_message_delay_seconds_bucket{le=\"1\"} 2\n"
        "txbox_relay_message_delay_seconds_bucket{le=\"+Inf\"} 3\n"
        "txbox_relay_message_delay_seconds_sum 3.25\n"
        "txbox_relay_message_delay_seconds_count 3\n"
        "# HELP txbox_relay_messages_published_total Messages confirmed and deleted.\n"
        "# TYPE txbox_relay_messages_published_total counter\n"
        "txbox_relay_messages_published_total{destination=\"orders\"} 3\n"
        "txbox_relay_messages_published_total{destination=\"pay\\\"ments\\\\\\n\"} 1\n"
        "# HELP txbox_relay_workers Worker threads.\n"
        "# TYPE txbox_relay_workers gauge\n"
        "txbox_relay_workers 4\n");
}

TEST_CASE("metrics: the first label is capped; beyond the cap new values count as 'other'", "[unit][metrics]") {
  m::Registry registry;
  auto& family = registry.counter("txbox_x_total", "x", {"destination", "outcome"}, 2);
  family.with({"a", "applied"}).inc();
  family.with({"b", "applied"}).inc();
  family.with({"c", "applied"}).inc();
  family.with({"d", "duplicate"}).inc();
  family.with({"a", "duplicate"}).inc();  // a known value stays itself
  const auto text = registry.render();
  CHECK_THAT(text, Contains("txbox_x_total{destination=\"other\",outcome=\"applied\"} 1\n"));
  CHECK_THAT(text, Contains("txbox_x_total{destination=\"other\",outcome=\"duplicate\"} 1\n"));
  CHECK_THAT(text, Contains("txbox_x_total{destination=\"a\",outcome=\"duplicate\"} 1\n"));
  CHECK(text.find("destination=\"c\"") == std::string::npos);
}

TEST_CASE("metrics: names are checked at registration", "[unit][metrics]") {
  m::Registry registry;
  CHECK_THROWS_AS(registry.counter("txbox_published", "counter without _total"), std::logic_error);
  CHECK_THROWS_AS(registry.gauge("txbox_lag_total", "gauge with _total"), std::logic_error);
  CHECK_THROWS_AS(registry.gauge("9lives", "bad name"), std::logic_error);
  registry.gauge("txbox_lanes_owned", "ok");
  CHECK_THROWS_AS(registry.gauge("txbox_lanes_owned", "twice"), std::logic_error);
  CHECK_THROWS_AS(registry.histogram("txbox_h_seconds", "bounds not increasing", {1, 0.5}), std::logic_error);
}

TEST_CASE("metrics: updates from many threads are all counted, without locks on the hot path", "[unit][metrics]") {
  m::Registry registry;
  auto& counter = registry.counter("txbox_n_total", "n").with({});
  auto& histogram = registry.histogram("txbox_d_seconds", "d", m::duration_buckets()).with({});
  auto& gauge = registry.gauge("txbox_g", "g").with({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) {
        counter.inc();
        histogram.observe(0.002);
        gauge.add(1);
      }
    });
  for (auto& t : threads) t.join();
  CHECK(counter.value() == 400000);
  CHECK(histogram.snapshot().count == 400000);
  CHECK(gauge.value() == 400000);
  CHECK(std::abs(histogram.snapshot().sum - 800) < 1e-6);
}

TEST_CASE("metrics: process metrics and build info", "[unit][metrics]") {
  m::Registry registry;
  m::add_process_metrics(registry);
  const auto text = registry.render();
  CHECK_THAT(text, Contains("# TYPE process_cpu_seconds_total counter\n"));
  CHECK_THAT(text, Contains("# TYPE process_resident_memory_bytes gauge\n"));
  CHECK_THAT(text, Contains("process_start_time_seconds 1"));  // seconds since 1970: 1.7e9...
  CHECK_THAT(text, Contains("txbox_build_info{version=\""));
  CHECK(text.find("process_resident_memory_bytes 0\n") == std::string::npos);
}
