#include <catch2/catch.hpp>
#include <set>

#include "txbox/outbox/outbox.hpp"
#include "txbox/outbox/schema.hpp"

TEST_CASE("new message ids are distinct version-4 UUIDs", "[outbox]") {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    auto id = txbox::outbox::new_message_id();
    REQUIRE(txbox::outbox::is_uuid(id));
    REQUIRE(id[14] == '4');
    REQUIRE(std::string("89ab").find(id[19]) != std::string::npos);
    seen.insert(id);
  }
  CHECK(seen.size() == 10000);
}

TEST_CASE("UUID syntax check", "[outbox]") {
  CHECK(txbox::outbox::is_uuid("123E4567-e89b-12d3-a456-426614174000"));
  CHECK_FALSE(txbox::outbox::is_uuid("123e4567e89b12d3a456426614174000"));
  CHECK_FALSE(txbox::outbox::is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
  CHECK_FALSE(txbox::outbox::is_uuid(""));
}

TEST_CASE("migrations are embedded in version order starting at 1", "[schema]") {
  const auto& all = txbox::outbox::migrations();
  REQUIRE_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) {
    CHECK(all[i].version == static_cast<int>(i) + 1);
    CHECK_FALSE(all[i].sql.empty());
  }
  CHECK(all.front().name == "init");
  CHECK(txbox::outbox::latest_schema_version() == all.back().version);
}
