// find_package(txbox COMPONENTS outbox): the outbox and the core it needs.
#include <cstdio>
#include <string_view>
#include <txbox/core/version.hpp>
#include <txbox/outbox/outbox.hpp>
#include <txbox/outbox/schema.hpp>

int main() {
  if (std::string_view(txbox::kVersion) != TXBOX_EXPECTED_VERSION) {
    std::printf("txbox::kVersion %s, package version %s\n", txbox::kVersion, TXBOX_EXPECTED_VERSION);
    return 1;
  }
  std::printf("txbox %s, schema version %d, message id %s\n", txbox::kVersion,
              txbox::outbox::latest_schema_version(), txbox::outbox::new_message_id().c_str());
  return txbox::outbox::is_uuid(txbox::outbox::new_message_id()) ? 0 : 1;
}
