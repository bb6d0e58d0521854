#pragma once
// txbox::metrics — counters, gauges and histograms in the Prometheus data
// model, rendered in the text exposition format 0.0.4. Our own small code
// (prometheus-cpp is not packaged for Debian), standard library only.
//
// Hot path: a metric with its label values is looked up once (under a
// mutex) and the reference kept; incrementing, setting and observing are
// then lock-free atomics. Rendering takes the registry's mutex only to walk
// the families.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace txbox::metrics {

class Counter {
 public:
  void inc(uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) noexcept;
  void add(double v) noexcept;
  double value() const noexcept;

 private:
  std::atomic<uint64_t> bits_{0};  // a double's bits (0 = 0.0)
};

class Histogram {
 public:
  // `bounds`: the upper bounds of the buckets, strictly increasing (+Inf is
  // implicit).
  explicit Histogram(std::vector<double> bounds);
  void observe(double v) noexcept;
  void observe(std::chrono::steady_clock::duration d) noexcept {
    observe(std::chrono::duration<double>(d).count());
  }

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (+Inf)
  Gauge sum_;
  std::atomic<uint64_t> count_{0};
};

// Bucket bounds, in seconds, for durations from a millisecond to a minute.
std::vector<double> duration_buckets();

// Label values in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// A metric name with label names; one T per distinct label values. The
// first label is capped: beyond `max_values` distinct values of it, new
// ones are recorded as "other" (a destination per tenant must not grow the
// scrape without bound).
template <typename T>
class Family {
 public:
  template <typename... Args>
  Family(std::vector<std::string> label_names, size_t max_values, Args... args)
      : label_names_(std::move(label_names)), max_values_(max_values), make_([=] {
          return std::make_unique<T>(args...);
        }) {}

  T& with(LabelValues values) {
    std::lock_guard lock(mutex_);
    if (!values.empty() && max_values_ > 0 && !first_values_.contains(values[0])) {
      if (first_values_.size() >= max_values_) values[0] = "other";
      else first_values_.insert({values[0], true});
    }
    auto& slot = metrics_[values];
    if (!slot) slot = make_();
    return *slot;
  }

  const std::vector<std::string>& label_names() const noexcept { return label_names_; }
  // Calls `f(values, metric)` for each, in label order.
  template <typename F>
  void each(F&& f) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, metric] : metrics_) f(values, *metric);
  }

 private:
  std::vector<std::string> label_names_;
  size_t max_values_;
  std::function<std::unique_ptr<T>()> make_;
  mutable std::mutex mutex_;
  std::map<LabelValues, std::unique_ptr<T>> metrics_;
  std::map<std::string, bool> first_values_;
};

// The families of a process (or of one component), rendered together.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Names must be valid Prometheus metric names, counters end in "_total";
  // a name registered twice is a programming error (std::logic_error).
  Family<Counter>& counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {},
                           size_t max_first_label_values = 100);
  Family<Gauge>& gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {},
                       size_t max_first_label_values = 100);
  Family<Histogram>& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                               std::vector<std::string> labels = {}, size_t max_first_label_values = 100);

  // A counter whose value is sampled rather than counted (CPU seconds):
  // set at collect time, rendered as a counter.
  Family<Gauge>& sampled_counter(const std::string& name, const std::string& help,
                                 std::vector<std::string> labels = {});

  // Called at every render(), before the families are read: for values
  // sampled at scrape time (process memory and CPU).
  void on_collect(std::function<void()> collect);

  // The text exposition format 0.0.4 (Content-Type
  // "text/plain; version=0.0.4; charset=utf-8"), families sorted by name.
  std::string render() const;

 private:
  struct Entry;
  void add(const std::string& name, std::unique_ptr<Entry> entry);
  Family<Gauge>& add_gauge(const std::string& type, const std::string& name, const std::string& help,
                           std::vector<std::string> labels, size_t max_first_label_values);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Entry>> families_;
  std::vector<std::function<void()>> collectors_;
};

// The content type of Registry::render()'s text.
constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Adds process_resident_memory_bytes, process_cpu_seconds_total,
// process_start_time_seconds (read from /proc at render time) and
// txbox_build_info{version} (1) to `registry`.
void add_process_metrics(Registry& registry);

// The label value escaped for the exposition format (\\, \", \n).
std::string escape_label_value(std::string_view value);

}  // namespace txbox::metrics
