// Example order service: each order and its OrderPlaced event are written in
// ONE transaction, so the event exists if and only if the order does.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <pqxx/pqxx>
#include <random>

#include "example_args.hpp"
#include "txbox/outbox/outbox.hpp"

// The service's own data: one row per order, written with its event.
constexpr const char* kOrdersTable =
    "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer text NOT NULL, "
    "amount_cents bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())";

int main(int argc, char** argv) {
  std::string database_url, topic = "orders";
  int orders = 1000, customers = 50;
  CLI::App app{"Example order service writing orders and their events through the txbox outbox"};
  example::add_database_url_option(app, database_url);
  app.add_option("--orders", orders, "orders to place");
  app.add_option("--customers", customers, "distinct customers (the event key: per-customer order)");
  app.add_option("--topic", topic, "destination of the events");
  CLI11_PARSE(app, argc, argv);

  try {
    pqxx::connection conn(database_url);
    example::create_table(conn, kOrdersTable);
    txbox::outbox::Outbox outbox;
    std::mt19937 random(42);
    for (int i = 0; i < orders; ++i) {
      std::string customer = fmt::format("customer-{}", random() % customers);
      long amount = 100 + random() % 100000;
      pqxx::work tx(conn);
      auto id = tx.exec1(fmt::format("INSERT INTO orders (customer, amount_cents) VALUES ({}, {}) RETURNING id",
                                     tx.quote(customer), amount))[0]
                    .as<long long>();
      outbox.enqueue(tx, {topic, customer,
                          fmt::format(R"({{"type":"OrderPlaced","order_id":{},"customer":"{}","amount_cents":{}}})",
                                      id, customer, amount),
                          {{"content-type", "application/json"}, {"event-type", "OrderPlaced"}},
                          {}});
      tx.commit();  // the order and its event, together
    }
    std::printf("order service: placed %d orders for %d customers (each with its event, one transaction each)\n",
                orders, customers);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "order service: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
