#pragma once
// PostgreSQL array literals for statement parameters ("{1,2}",
// "{\"a\",NULL}"): how txbox passes many values through one parameter
// ($1::bigint[], unnest($2::text[])) instead of splicing them into SQL.

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace txbox {

std::string pg_array(std::span<const int64_t> values);
std::string pg_array(std::span<const int16_t> values);
std::string pg_array(std::span<const std::string> values);
std::string pg_array(std::span<const std::optional<std::string>> values);  // nullopt = NULL

}  // namespace txbox
