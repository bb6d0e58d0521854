#include <cstdio>
#include <txbox/consumer/inbox_consumer.hpp>
#include <txbox/inbox/inbox.hpp>
#include <txbox/outbox/outbox.hpp>
#include <txbox/outbox/schema.hpp>
#include <txbox/relay/options.hpp>

int main() {
  txbox::inbox::Inbox inbox("package-test");
  txbox::relay::RelayOptions options;
  std::printf("txbox schema version %d, message id %s, %d relay workers by default\n",
              txbox::outbox::latest_schema_version(), txbox::outbox::new_message_id().c_str(), options.workers);
  return txbox::outbox::is_uuid(txbox::outbox::new_message_id()) ? 0 : 1;
}
