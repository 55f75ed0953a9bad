# ha_api: the control API server (agent/api). Included from agent/CMakeLists.txt after
# store.cmake; paths are relative to this file so any includer can use it.
find_package(nlohmann_json 3 REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(Threads REQUIRED)
add_library(ha_api STATIC
  ${CMAKE_CURRENT_LIST_DIR}/api/control_server.cpp
  ${CMAKE_CURRENT_LIST_DIR}/api/client.cpp
  ${CMAKE_CURRENT_LIST_DIR}/api/store_queries.cpp)
target_link_libraries(ha_api PUBLIC ha_common ha_store nlohmann_json::nlohmann_json Boost::boost
                      Threads::Threads)
ha_target_defaults(ha_api)
