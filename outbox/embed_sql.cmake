# Generates a C++ file holding every sql/NNNN_name.sql as a migration.
# Invoked as: cmake -DSQL_DIR=... -DOUTPUT=... -P embed_sql.cmake
file(GLOB files RELATIVE ${SQL_DIR} ${SQL_DIR}/[0-9][0-9][0-9][0-9]_*.sql)
list(SORT files)
set(body "")
foreach(f IN LISTS files)
  string(REGEX MATCH "^([0-9]+)_(.*)\\.sql$" _ ${f})
  math(EXPR version "${CMAKE_MATCH_1}")
  set(name ${CMAKE_MATCH_2})
  file(READ ${SQL_DIR}/${f} sql)
  string(APPEND body "    {${version}, \"${name}\", R\"txbox_sql(${sql})txbox_sql\"},\n")
endforeach()
file(WRITE ${OUTPUT}.tmp "// Generated from sql/*.sql by outbox/embed_sql.cmake. Do not edit.\n#include \"txbox/outbox/schema.hpp\"\n\nnamespace txbox::outbox {\nconst std::vector<Migration>& migrations() {\n  static const std::vector<Migration> all{\n${body}  };\n  return all;\n}\n}  // namespace txbox::outbox\n")
file(COPY_FILE ${OUTPUT}.tmp ${OUTPUT} ONLY_IF_DIFFERENT)
