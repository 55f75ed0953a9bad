# The daemon: ha_core + adapters + the io_uring loop. Included from agent/CMakeLists.txt.
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(SYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
find_package(nlohmann_json REQUIRED)

add_library(ha_io STATIC io/ring.cpp)
target_link_libraries(ha_io PUBLIC ha_common PkgConfig::URING)
ha_target_defaults(ha_io)

add_library(ha_agent STATIC agent.cpp metrics_server.cpp heartbeat.cpp sync_bridge.cpp service/supervisor.cpp service/probe.cpp service/spawn.cpp)
target_link_libraries(ha_agent PUBLIC ha_core ha_io ha_bpf ha_netlink ha_api ha_store
                      nlohmann_json::nlohmann_json PkgConfig::SYSTEMD)
if(TARGET ha_sync)
  target_link_libraries(ha_agent PUBLIC ha_sync)
endif()
ha_target_defaults(ha_agent)

add_executable(fcm-ha-agent main.cpp)
target_link_libraries(fcm-ha-agent PRIVATE ha_agent)
target_compile_definitions(fcm-ha-agent PRIVATE HA_VERSION="${PROJECT_VERSION}"
                           HA_MODEL="${HA_MODEL}" HA_PROTO_VERSION=${HA_PROTO_VERSION})
ha_target_defaults(fcm-ha-agent)
install(TARGETS fcm-ha-agent RUNTIME DESTINATION sbin)
