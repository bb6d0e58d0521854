#pragma once
// The outbox table through plain SQL, as an application without the library
// (or a test checking the library's work) uses it.

#include <pqxx/pqxx>
#include <string>

namespace txbox::test {

inline long long outbox_rows(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  return tx.exec1("SELECT count(*) FROM txbox.outbox")[0].as<long long>();
}

// The row of the end-to-end "plain-SQL insert" tests, committed: to
// `destination`, key "order-42", payload {"id":42}, header content-type
// application/json. Returns its message id.
inline std::string insert_sql_order_row(const std::string& url, const std::string& destination) {
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  auto message_id = tx.exec1("INSERT INTO txbox.outbox (destination, message_key, payload, headers) VALUES (" +
                             tx.quote(destination) +
                             ", 'order-42', convert_to('{\"id\":42}','UTF8'), "
                             "'{\"content-type\":\"application/json\"}') RETURNING message_id::text")[0]
                        .as<std::string>();
  tx.commit();
  return message_id;
}

}  // namespace txbox::test
