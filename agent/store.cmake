# ha_store: the persisted HA log, system events and term (agent/store). Included from
# agent/CMakeLists.txt; paths are relative to this file so any includer can use it.
find_package(nlohmann_json 3 REQUIRED)
add_library(ha_store STATIC
  ${CMAKE_CURRENT_LIST_DIR}/store/event_store.cpp
  ${CMAKE_CURRENT_LIST_DIR}/store/guide_format.cpp
  ${CMAKE_CURRENT_LIST_DIR}/store/term_store.cpp)
target_link_libraries(ha_store PUBLIC ha_common nlohmann_json::nlohmann_json)
ha_target_defaults(ha_store)
