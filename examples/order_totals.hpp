#pragma once
// The example consumer's own data and handler: one row per customer,
// updated by each OrderPlaced event with one upsert. Shared by
// examples/order_consumer.cpp and the consumer bench (bench/consumer_bench.cpp),
// so the bench measures the very handler the example runs.

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "txbox/brokers/message.hpp"

namespace example {

inline constexpr const char* kCustomerTotalsTable =
    "CREATE TABLE IF NOT EXISTS customer_totals (customer text PRIMARY KEY, orders bigint NOT NULL, "
    "amount_cents bigint NOT NULL)";

// A payload {"customer": "...", "amount_cents": N} adds one order of N
// cents to the customer's row.
inline void add_order_to_customer_totals(pqxx::transaction_base& tx, const txbox::brokers::Delivery& delivery) {
  auto event = nlohmann::json::parse(delivery.message.payload);
  tx.exec0(fmt::format(
      "INSERT INTO customer_totals VALUES ({0}, 1, {1}) ON CONFLICT (customer) DO UPDATE SET "
      "orders = customer_totals.orders + 1, amount_cents = customer_totals.amount_cents + {1}",
      tx.quote(event.at("customer").get<std::string>()), event.at("amount_cents").get<long long>()));
}

}  // namespace example
