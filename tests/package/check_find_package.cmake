# find_package(txbox) from an installed prefix, in a downstream project
# (tests/package/consumer), once per check:
#   all      find_package(txbox): configure, build and run a program linking
#            outbox, inbox, consumer and relay
#   outbox   find_package(txbox COMPONENTS outbox): configure, build, run; the
#            configure looks up none of the broker client libraries (rdkafka,
#            librabbitmq, libnats, hiredis), checked in its --trace-expand output
#   kafka    find_package(txbox COMPONENTS kafka): as outbox, and rdkafka is
#            looked up (which also proves the trace check sees lookups)
#   unknown  find_package(txbox COMPONENTS outbox no-such-component) fails to
#            configure with a message naming the component
# Also: the Kafka mock (a test tool) is not installed.
#
#   cmake -DBUILD_DIR=<build tree> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch dir> -P check_find_package.cmake
#         (installs BUILD_DIR into WORK_DIR/prefix first)
#   cmake -DPREFIX=<installed prefix> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch dir> -P check_find_package.cmake
#   optional: -DCHECKS="outbox;kafka" (default: all;outbox;kafka;unknown)
cmake_minimum_required(VERSION 3.25)
if(NOT DEFINED CHECKS OR CHECKS STREQUAL "")
  set(CHECKS all outbox kafka unknown)
endif()
foreach(var SOURCE_DIR WORK_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "check_find_package.cmake: -D${var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}")
  endif()
endfunction()

if(PREFIX)
  set(prefix ${PREFIX})
elseif(BUILD_DIR)
  set(prefix ${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
else()
  message(FATAL_ERROR "check_find_package.cmake: give -DPREFIX=<installed prefix> or -DBUILD_DIR=<build tree>")
endif()
if(EXISTS ${prefix}/bin/txbox-kafka-mock)
  message(FATAL_ERROR "${prefix}/bin/txbox-kafka-mock is installed: the Kafka mock is a test tool")
endif()

# Broker client libraries a lookup must (not) mention, by check.
set(brokers rdkafka rabbitmq libnats cnats hiredis)
set(expect_outbox "")
set(expect_kafka rdkafka)

foreach(check IN LISTS CHECKS)
  set(build ${WORK_DIR}/${check})
  set(configure ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${build} -DTXBOX_CHECK=${check}
                -DCMAKE_PREFIX_PATH=${prefix})
  if(check STREQUAL "unknown")
    execute_process(COMMAND ${configure} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE out)
    if(code EQUAL 0 OR NOT out MATCHES "Unknown txbox component\\(s\\): no-such-component")
      message(FATAL_ERROR "find_package(txbox COMPONENTS outbox no-such-component): expected a configure error "
                          "naming the unknown component, got (exit ${code}):\n${out}")
    endif()
    message(STATUS "find_package(txbox COMPONENTS no-such-component): refused")
    continue()
  endif()
  if(NOT DEFINED expect_${check})
    run(${configure})
  else()
    run(${configure} --trace-expand --trace-redirect=${build}.trace)
    # Every lookup command in the trace, as "command(args)" in lower case.
    file(STRINGS ${build}.trace lookups REGEX
         "\\):  *(pkg_check_modules|pkg_search_module|_pkg_check_modules_internal|find_package|find_dependency|find_library|find_path|find_file|find_program|execute_process)\\(")
    list(LENGTH lookups count)
    if(count EQUAL 0)
      message(FATAL_ERROR "${check}: no lookup found in ${build}.trace: the trace check is broken")
    endif()
    set(seen "")
    foreach(line IN LISTS lookups)
      string(REGEX REPLACE "^.*\\):  *" "" line "${line}")
      string(TOLOWER "${line}" line)
      foreach(lib IN LISTS brokers)
        if(line MATCHES "${lib}")
          list(APPEND seen ${lib})
          if(NOT lib IN_LIST expect_${check})
            message(FATAL_ERROR "find_package(txbox COMPONENTS ${check}) looked up ${lib}: ${line}")
          endif()
        endif()
      endforeach()
    endforeach()
    foreach(lib IN LISTS expect_${check})
      if(NOT lib IN_LIST seen)
        message(FATAL_ERROR "find_package(txbox COMPONENTS ${check}) did not look up ${lib} (${count} lookups traced)")
      endif()
    endforeach()
    # And no library of another broker in the cache (pkg_check_modules'
    # find_library results are cached as pkgcfg_lib_<PREFIX>_<lib>).
    file(STRINGS ${build}/CMakeCache.txt cached REGEX "^pkgcfg_lib_(RDKAFKA|RABBITMQ|LIBNATS|HIREDIS)_")
    if(check STREQUAL "kafka")
      list(FILTER cached EXCLUDE REGEX "^pkgcfg_lib_RDKAFKA_")
    endif()
    if(cached)
      message(FATAL_ERROR "find_package(txbox COMPONENTS ${check}) found broker client libraries: ${cached}")
    endif()
    file(REMOVE ${build}.trace)
  endif()
  run(${CMAKE_COMMAND} --build ${build})
  run(${build}/package_consumer)
  message(STATUS "find_package(txbox) check ${check}: configured, built and ran")
endforeach()
