// The metrics text passes Prometheus's own linter: `promtool check metrics`
// (Debian package prometheus) with no warnings.
#include <catch2/catch.hpp>

#include "support/promtool.hpp"
#include "txbox/metrics/metrics.hpp"

namespace m = txbox::metrics;

TEST_CASE("metrics: promtool check metrics finds nothing to complain about", "[prometheus][metrics]") {
  m::Registry registry;
  m::add_process_metrics(registry);
  registry.counter("txbox_relay_messages_published_total", "Messages confirmed by the broker and deleted.",
                   {"destination"})
      .with({"orders \"eu\"\\west"})
      .inc(7);
  registry.gauge("txbox_outbox_pending_messages", "Rows in the outbox.").with({}).set(12);
  auto& h = registry.histogram("txbox_relay_batch_duration_seconds", "Claim to commit.", m::duration_buckets());
  h.with({}).observe(0.003);
  h.with({}).observe(12.0);
  CHECK(txbox::test::promtool_complaints(registry.render()).empty());
}
