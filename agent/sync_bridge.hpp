// The agent's side of data sync: owns the sync engine (its own threads; it also runs the daily
// full backup at the configured time), tells it the role, turns its progress into core::EvSync
// events and its results into backup-log entries and system events. Loop thread only.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/core/config.hpp"
#include "agent/core/machine.hpp"
#include "agent/store/event_store.hpp"
#include "common/keyfile.hpp"
#include "common/result.hpp"

namespace ha {

class SyncBridge {
  public:
    static Result<std::unique_ptr<SyncBridge>> create(const core::Config& cfg, const Key& key,
                                                      store::EventStore& events);
    ~SyncBridge();
    SyncBridge(const SyncBridge&) = delete;
    SyncBridge& operator=(const SyncBridge&) = delete;

    void set_role(core::State state);
    void request_full_sync();
    void quarantine(std::uint64_t term);
    // "" when started, else why not (standby, already running, no peer).
    std::string start_full_backup(core::State state);
    // -1 when there is no engine (no sync roots configured).
    [[nodiscard]] int event_fd() const;
    // Engine events (backup results, faults) -> the HA backup log and system events.
    void drain();
    // Periodic: lag into EvSync when it changed.
    void poll(std::deque<core::Event>& out, TimePoint now);
    [[nodiscard]] std::optional<TimePoint> next_deadline() const;
    [[nodiscard]] nlohmann::json status_json() const;
    [[nodiscard]] nlohmann::json backup_json() const;
    [[nodiscard]] bool backup_in_progress() const;
    void stop();

    struct Impl;

  private:
    explicit SyncBridge(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace ha
