# The installed CMake package: find_package(txbox [COMPONENTS ...]).
#
# Included by the top-level CMakeLists.txt after every component folder, so
# each component's link libraries are final. Every component (a library
# declared with txbox_component()) gets its own export set and targets file,
# txbox-<component>-targets.cmake, and a row in a table written into
# txboxConfig.cmake:
#   - the txbox components it links (txbox::<name>), and their closure;
#   - the CMake packages its imported targets come from (<Ns>::<name> comes
#     from find_package(<Ns>): fmt, spdlog, Threads, ...);
#   - the pkg-config modules behind its PkgConfig::<PREFIX> targets.
# The table is derived from the targets' INTERFACE_LINK_LIBRARIES (for a
# static library CMake records PRIVATE dependencies there too, as
# $<LINK_ONLY:...>), i.e. from exactly what the exported targets files refer
# to, so it cannot drift from the target_link_libraries() calls.
# find_package(txbox COMPONENTS kafka) then looks up rdkafka and nothing of
# the other brokers.

block(SCOPE_FOR VARIABLES)
# PkgConfig::<PREFIX> -> the pkg-config module behind it. A component linking
# a PkgConfig:: target missing here stops the configure with a message.
set(_txbox_pkg_config_module_PQXX libpqxx)
set(_txbox_pkg_config_module_PQ libpq)
set(_txbox_pkg_config_module_RDKAFKA rdkafka)
set(_txbox_pkg_config_module_RABBITMQ librabbitmq)
set(_txbox_pkg_config_module_LIBNATS libnats)
set(_txbox_pkg_config_module_HIREDIS hiredis)
set(_txbox_pkg_config_module_HTTPLIB cpp-httplib)

get_property(_txbox_components GLOBAL PROPERTY TXBOX_COMPONENTS)

# Direct dependencies of each component.
foreach(_c IN LISTS _txbox_components)
  set(_txbox_${_c}_requires "")
  set(_txbox_${_c}_packages "")
  set(_txbox_${_c}_pkg_config "")
  get_target_property(_items ${_c} INTERFACE_LINK_LIBRARIES)
  if(NOT _items)
    set(_items "")
  endif()
  foreach(_item IN LISTS _items)
    # Unwrap $<LINK_ONLY:x> and $<INSTALL_INTERFACE:x>; build-tree-only items
    # are not part of the package; ::@(...) are CMake's directory markers.
    while(_item MATCHES "^\\$<(LINK_ONLY|INSTALL_INTERFACE):(.*)>$")
      set(_item "${CMAKE_MATCH_2}")
    endwhile()
    if(_item STREQUAL "" OR _item MATCHES "^\\$<BUILD_INTERFACE:" OR _item MATCHES "^::@")
      continue()
    endif()
    if(_item MATCHES "^\\$<")
      message(FATAL_ERROR "txbox component ${_c} links '${_item}': a generator expression cmake/txboxPackage.cmake "
                          "does not know how to map to the installed package; teach it there.")
    endif()
    set(_dep "")
    if(_item MATCHES "^txbox::(.+)$" AND CMAKE_MATCH_1 IN_LIST _txbox_components)
      set(_dep "${CMAKE_MATCH_1}")
    elseif(_item IN_LIST _txbox_components)
      set(_dep "${_item}")
    endif()
    if(_dep)
      list(APPEND _txbox_${_c}_requires ${_dep})
    elseif(_item MATCHES "^PkgConfig::(.+)$")
      set(_prefix "${CMAKE_MATCH_1}")
      if(NOT DEFINED _txbox_pkg_config_module_${_prefix})
        message(FATAL_ERROR "txbox component ${_c} links ${_item}: add its pkg-config module to the table at the "
                            "top of cmake/txboxPackage.cmake (set(_txbox_pkg_config_module_${_prefix} <module>)).")
      endif()
      list(APPEND _txbox_${_c}_pkg_config "${_prefix}=${_txbox_pkg_config_module_${_prefix}}")
    elseif(_item MATCHES "^([^:]+)::.+$")
      list(APPEND _txbox_${_c}_packages "${CMAKE_MATCH_1}")
    elseif(TARGET ${_item})
      message(FATAL_ERROR "txbox component ${_c} links the target ${_item}, which is neither a txbox component "
                          "(txbox_component()) nor an imported target: the installed package could not provide it.")
    endif()
    # Anything else is a plain library name or flag (dl, -pthread): no lookup.
  endforeach()
  foreach(_list requires packages pkg_config)
    list(REMOVE_DUPLICATES _txbox_${_c}_${_list})
  endforeach()
endforeach()

# Dependency order (dependencies first) by repeated passes; a cycle is an error.
set(_txbox_ordered "")
set(_txbox_pending ${_txbox_components})
while(_txbox_pending)
  set(_progress FALSE)
  foreach(_c IN LISTS _txbox_pending)
    set(_ready TRUE)
    foreach(_d IN LISTS _txbox_${_c}_requires)
      if(NOT _d IN_LIST _txbox_ordered)
        set(_ready FALSE)
      endif()
    endforeach()
    if(_ready)
      list(APPEND _txbox_ordered ${_c})
      list(REMOVE_ITEM _txbox_pending ${_c})
      set(_progress TRUE)
    endif()
  endforeach()
  if(NOT _progress)
    message(FATAL_ERROR "txbox components depend on each other in a cycle: ${_txbox_pending}")
  endif()
endwhile()

# Closure of each component (itself and everything it needs, dependencies first).
foreach(_c IN LISTS _txbox_ordered)
  set(_closure "")
  foreach(_d IN LISTS _txbox_${_c}_requires)
    list(APPEND _closure ${_txbox_${_d}_closure})
  endforeach()
  list(APPEND _closure ${_c})
  list(REMOVE_DUPLICATES _closure)
  # Keep dependency order.
  set(_txbox_${_c}_closure "")
  foreach(_o IN LISTS _txbox_ordered)
    if(_o IN_LIST _closure)
      list(APPEND _txbox_${_c}_closure ${_o})
    endif()
  endforeach()
endforeach()

# The table substituted into txboxConfig.cmake as @TXBOX_COMPONENT_TABLE@.
string(REPLACE ";" " " _words "${_txbox_ordered}")
set(TXBOX_COMPONENT_TABLE "# Components in dependency order.\nset(_txbox_components ${_words})\n")
foreach(_c IN LISTS _txbox_ordered)
  string(APPEND TXBOX_COMPONENT_TABLE "# txbox::${_c}: txbox components it links (and their closure), CMake packages, pkg-config modules.\n")
  foreach(_list requires closure packages pkg_config)
    string(REPLACE ";" " " _words "${_txbox_${_c}_${_list}}")
    string(APPEND TXBOX_COMPONENT_TABLE "set(_txbox_${_c}_${_list} ${_words})\n")
  endforeach()
  install(EXPORT txbox-${_c}-targets NAMESPACE txbox:: FILE txbox-${_c}-targets.cmake
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/txbox)
endforeach()

include(CMakePackageConfigHelpers)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/txboxConfig.cmake.in ${PROJECT_BINARY_DIR}/txboxConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/txbox)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/txboxConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/txboxConfig.cmake ${PROJECT_BINARY_DIR}/txboxConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/txbox)
endblock()
