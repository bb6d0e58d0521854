#include "txbox/metrics/metrics.hpp"

#include <unistd.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "txbox/core/version.hpp"

namespace txbox::metrics {

void Gauge::set(double v) noexcept { bits_.store(std::bit_cast<uint64_t>(v), std::memory_order_relaxed); }

void Gauge::add(double v) noexcept {
  uint64_t old = bits_.load(std::memory_order_relaxed);
  while (!bits_.compare_exchange_weak(old, std::bit_cast<uint64_t>(std::bit_cast<double>(old) + v),
                                      std::memory_order_relaxed)) {
  }
}

double Gauge::value() const noexcept { return std::bit_cast<double>(bits_.load(std::memory_order_relaxed)); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1]))
      throw std::logic_error("histogram bucket bounds must be finite and strictly increasing");
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) noexcept {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.add(v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  // The count is the +Inf bucket, so that a scrape racing an observe()
  // still has count == the last bucket.
  s.count = running;
  s.sum = sum_.value();
  return s;
}

std::vector<double> duration_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {

std::string escape_help(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  // The shortest text that reads back as the same double ("0.1", not
  // "0.10000000000000001").
  const auto end = std::to_chars(buffer, buffer + sizeof buffer, v).ptr;
  return std::string(buffer, end);
}

// `{a="x",b="y"}` (with `extra` appended, e.g. le="0.5"), or "" for none.
std::string labels_text(const std::vector<std::string>& names, const LabelValues& values,
                        const std::string& extra = {}) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    out += out.empty() ? "{" : ",";
    out += names[i] + "=\"" + escape_label_value(values[i]) + "\"";
  }
  if (!extra.empty()) out += (out.empty() ? "{" : ",") + extra;
  if (!out.empty()) out += "}";
  return out;
}

}  // namespace

struct Registry::Entry {
  std::string type, help;
  std::function<void(std::string& out, const std::string& name)> render;
};

Registry::Registry() = default;
Registry::~Registry() = default;

void Registry::add(const std::string& name, std::unique_ptr<Entry> entry) {
  if (!valid_name(name)) throw std::logic_error("invalid metric name '" + name + "'");
  const bool total = name.size() > 6 && name.ends_with("_total");
  if ((entry->type == "counter") != total)
    throw std::logic_error("metric '" + name + "': counters, and only counters, end in _total");
  std::lock_guard lock(mutex_);
  if (!families_.emplace(name, std::move(entry)).second)
    throw std::logic_error("metric '" + name + "' is registered twice");
}

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> labels, size_t max_first_label_values) {
  auto family = std::make_shared<Family<Counter>>(std::move(labels), max_first_label_values);
  auto entry = std::make_unique<Entry>(Entry{"counter", help, [family](std::string& out, const std::string& n) {
                                               family->each([&](const LabelValues& v, const Counter& c) {
                                                 out += n + labels_text(family->label_names(), v) + " " +
                                                        std::to_string(c.value()) + "\n";
                                               });
                                             }});
  add(name, std::move(entry));
  return *family;
}

Family<Gauge>& Registry::add_gauge(const std::string& type, const std::string& name, const std::string& help,
                                   std::vector<std::string> labels, size_t max_first_label_values) {
  auto family = std::make_shared<Family<Gauge>>(std::move(labels), max_first_label_values);
  add(name, std::make_unique<Entry>(Entry{type, help, [family](std::string& out, const std::string& n) {
                                            family->each([&](const LabelValues& v, const Gauge& g) {
                                              out += n + labels_text(family->label_names(), v) + " " +
                                                     format_value(g.value()) + "\n";
                                            });
                                          }}));
  return *family;
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help, std::vector<std::string> labels,
                               size_t max_first_label_values) {
  return add_gauge("gauge", name, help, std::move(labels), max_first_label_values);
}

Family<Gauge>& Registry::sampled_counter(const std::string& name, const std::string& help,
                                         std::vector<std::string> labels) {
  return add_gauge("counter", name, help, std::move(labels), 100);
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                       std::vector<std::string> labels, size_t max_first_label_values) {
  Histogram check(bounds);  // invalid bounds fail here, at registration
  auto family = std::make_shared<Family<Histogram>>(std::move(labels), max_first_label_values, bounds);
  auto entry = std::make_unique<Entry>(Entry{
      "histogram", help, [family](std::string& out, const std::string& n) {
        family->each([&](const LabelValues& v, const Histogram& h) {
          const auto s = h.snapshot();
          const auto& names = family->label_names();
          for (size_t i = 0; i < s.bounds.size(); ++i)
            out += n + "_bucket" + labels_text(names, v, "le=\"" + format_value(s.bounds[i]) + "\"") + " " +
                   std::to_string(s.cumulative[i]) + "\n";
          out += n + "_bucket" + labels_text(names, v, "le=\"+Inf\"") + " " + std::to_string(s.cumulative.back()) +
                 "\n";
          out += n + "_sum" + labels_text(names, v) + " " + format_value(s.sum) + "\n";
          out += n + "_count" + labels_text(names, v) + " " + std::to_string(s.count) + "\n";
        });
      }});
  add(name, std::move(entry));
  return *family;
}

void Registry::on_collect(std::function<void()> collect) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::render() const {
  std::lock_guard lock(mutex_);
  for (const auto& collect : collectors_) collect();
  std::string out;
  for (const auto& [name, entry] : families_) {
    std::string samples;
    entry->render(samples, name);
    if (samples.empty()) continue;  // a family with no labelled metric yet
    out += "# HELP " + name + " " + escape_help(entry->help) + "\n";
    out += "# TYPE " + name + " " + entry->type + "\n";
    out += samples;
  }
  return out;
}

void add_process_metrics(Registry& registry) {
  auto& rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.").with({});
  auto& cpu = registry.sampled_counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
                  .with({});
  auto& start = registry.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.")
                    .with({});
  registry.gauge("txbox_build_info", "The txbox version of this program (value 1).", {"version"})
      .with({std::string(txbox::kVersion)})
      .set(1);
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // /proc/self/stat: after the command in parentheses, field 14 utime, 15
  // stime, 22 starttime (clock ticks since boot), 24 rss (pages).
  auto read_stat = [=]() -> std::vector<std::string> {
    std::ifstream in("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> fields;
    const auto close = text.rfind(')');
    if (close == std::string::npos) return fields;
    std::istringstream rest(text.substr(close + 2));
    for (std::string f; rest >> f;) fields.push_back(f);
    return fields;  // fields[0] is field 3 (state)
  };
  double boot_time = 0;
  {
    std::ifstream in("/proc/stat");
    for (std::string key; in >> key;) {
      if (key == "btime") {
        in >> boot_time;
        break;
      }
      std::string line;
      std::getline(in, line);
    }
  }
  if (auto f = read_stat(); f.size() > 21) start.set(boot_time + std::stod(f[19]) / ticks);
  registry.on_collect([=, &rss, &cpu] {
    auto f = read_stat();
    if (f.size() <= 21) return;
    cpu.set((std::stod(f[11]) + std::stod(f[12])) / ticks);
    rss.set(std::stod(f[21]) * page);
  });
}

}  // namespace txbox::metrics
