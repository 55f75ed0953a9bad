#include "agent/sync_bridge.hpp"

#include <fmt/format.h>

#include <map>
#include <set>

#include "common/log.hpp"
#include "sync/engine.hpp"

namespace ha {

namespace {

sync::Mode to_sync_mode(core::SyncMode m) {
    switch (m) {
        case core::SyncMode::File:
            return sync::Mode::File;
        case core::SyncMode::Append:
            return sync::Mode::Append;
        case core::SyncMode::Sqlite:
            return sync::Mode::Sqlite;
    }
    return sync::Mode::File;
}

sync::Role to_sync_role(core::State s, sync::Role current) {
    switch (s) {
        case core::State::Active:
        case core::State::SwitchingOut:
            return sync::Role::Active;
        case core::State::Standby:
        case core::State::HandingOff:
            return sync::Role::Standby;
        // Deciding: keep what we had (a probing standby still holds the latest copy).
        case core::State::Booting:
        case core::State::Probing:
            return current;
        case core::State::Off:
            return sync::Role::Off;
    }
    return current;
}

// One-shot sync alerts (a refused path, a checksum mismatch...) of one kind are written to the
// system events at most this often; the next one says how many were left out.
constexpr auto kAlertInterval = std::chrono::seconds(60);

}  // namespace

struct SyncBridge::Impl {
    core::Config cfg;
    store::EventStore& events;
    std::unique_ptr<sync::Engine> engine;  // null: no sync roots, nothing to replicate
    sync::Role role = sync::Role::Off;
    std::optional<core::EvSync> last_sent;
    TimePoint next_poll{};
    // Conditions raised and not yet restored (the system event key), and when each one-shot
    // alert kind was last written / how many were left out since.
    std::set<std::string> raised;
    std::map<std::string, std::pair<std::int64_t, unsigned>> last_alert;
};

SyncBridge::SyncBridge(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SyncBridge::~SyncBridge() = default;

Result<std::unique_ptr<SyncBridge>> SyncBridge::create(const core::Config& cfg, const Key& key,
                                                       store::EventStore& events) {
    auto impl = std::unique_ptr<Impl>(new Impl{cfg, events, nullptr});
    if (!cfg.sync_roots.empty()) {
        sync::SyncConfig sc;
        for (const auto& r : cfg.sync_roots) sc.roots.push_back({r.path, to_sync_mode(r.mode)});
        sc.key = key;
        if (cfg.peer_ip) sc.peer = *cfg.peer_ip;
        sc.port = cfg.sync_port;
        sc.state_dir = cfg.state_dir;
        // Validated by the config; midnight (the guide's default) otherwise.
        sc.full_backup_minute = core::minute_of_day(cfg.full_backup_time).value_or(0);
        auto engine = sync::Engine::create(std::move(sc));
        if (!engine) return unexpected(engine.error());
        impl->engine = std::move(*engine);
    }
    return std::unique_ptr<SyncBridge>(new SyncBridge(std::move(impl)));
}

void SyncBridge::set_role(core::State state) {
    const sync::Role r = to_sync_role(state, impl_->role);
    if (r == impl_->role) return;
    impl_->role = r;
    if (impl_->engine) impl_->engine->set_role(r);
    impl_->last_sent.reset();
}

void SyncBridge::request_full_sync() {
    if (impl_->engine) impl_->engine->request_full_sync();
}

void SyncBridge::quarantine(std::uint64_t term) {
    if (impl_->engine) impl_->engine->quarantine(term);
}

std::string SyncBridge::start_full_backup(core::State state) {
    if (!impl_->engine) return "no sync roots are configured";
    const auto st = impl_->engine->status();
    if (state != core::State::Active)
        return "a full backup runs from the active; this box is " +
               std::string(core::to_string(state));
    if (st.full_backup.in_progress) return "a full backup is already in progress";
    if (!st.connected) return "the standby is not connected";
    impl_->engine->request_full_sync();
    return {};
}

int SyncBridge::event_fd() const {
    return impl_->engine ? impl_->engine->event_fd().get() : -1;
}

void SyncBridge::drain() {
    if (!impl_->engine) return;
    impl_->engine->drain_events([&](const sync::SyncEvent& e) {
        using K = sync::SyncEvent::Kind;
        switch (e.kind) {
            case K::BackupSuccess:
            case K::BackupFailed: {
                // Daily, on-demand and the standby's initial sync alike: "HA backup success!!".
                store::BackupRecord r;
                r.success = e.kind == K::BackupSuccess;
                r.full = true;
                r.files = e.files;
                r.bytes = e.bytes;
                r.duration = std::chrono::milliseconds(e.duration_ms);
                if (!r.success) r.error = std::string(e.text());
                log::info("sync", "HA backup {} files={} bytes={} {}",
                          r.success ? "success" : "failed", r.files, r.bytes, r.error);
                (void)impl_->events.append(r, e.wall_ms ? e.wall_ms : wall_ms());
                break;
            }
            case K::DiskFull: {
                // A condition: raised once, restored when the standby has space again.
                const std::string key = "sync-disk-full";
                if (!impl_->raised.insert(key).second) break;
                store::SystemEvent ev{.raised = true,
                                      .key = key,
                                      .content = fmt::format("data sync: disk full: {}", e.text())};
                log::warn("sync", "{}", ev.content);
                (void)impl_->events.append(ev, wall_ms());
                break;
            }
            case K::Restored: {
                const std::string key = "sync-" + std::string(e.text());
                if (impl_->raised.erase(key) == 0) break;
                store::SystemEvent ev{
                    .raised = false,
                    .key = key,
                    .content = fmt::format("data sync: {} has recovered", e.text())};
                log::info("sync", "{}", ev.content);
                (void)impl_->events.append(ev, wall_ms());
                break;
            }
            case K::PeerRefused:
            case K::ChecksumMismatch:
            case K::ApplyFailed:
            case K::Quarantined: {
                const std::string key = "sync-" + std::string(sync::to_string(e.kind));
                const std::int64_t now_ms = wall_ms();
                auto& [last_ms, left_out] = impl_->last_alert[key];
                const auto interval_ms =
                    std::chrono::duration_cast<std::chrono::milliseconds>(kAlertInterval).count();
                log::warn("sync", "data sync: {}: {}", sync::to_string(e.kind), e.text());
                if (e.kind != K::Quarantined && last_ms != 0 && now_ms - last_ms < interval_ms) {
                    ++left_out;
                    break;
                }
                store::SystemEvent ev{
                    .raised = true,
                    .key = key,
                    .content = fmt::format("data sync: {}: {}{}", sync::to_string(e.kind), e.text(),
                                           left_out > 0 ? fmt::format(" ({} more in the last "
                                                                      "minute, see the log)",
                                                                      left_out)
                                                        : std::string())};
                last_ms = now_ms;
                left_out = 0;
                (void)impl_->events.append(ev, now_ms);
                break;
            }
            case K::Connected:
            case K::Disconnected:
            case K::InitialSyncDone:
                log::info("sync", "{} {}", sync::to_string(e.kind), e.text());
                break;
        }
    });
}

void SyncBridge::poll(std::deque<core::Event>& out, TimePoint now) {
    if (now < impl_->next_poll) return;
    // Status is a handful of atomics: cheap enough to read every 10 ms, so a force switch sees
    // the stream drain promptly.
    impl_->next_poll = now + std::chrono::milliseconds(10);
    core::EvSync ev{0, std::chrono::nanoseconds(0), true, true};
    if (impl_->engine) {
        const auto st = impl_->engine->status();
        // Queued but unsent changes, and sent ones not acknowledged yet (a delete moves no
        // bytes), are lag too: a switch must wait for them.
        ev.lag_bytes = st.lag_bytes + (st.queued_changes > 0 || st.unacked_changes > 0 ? 1 : 0);
        ev.oldest_unacked = std::chrono::nanoseconds(st.oldest_unacked_ns);
        ev.connected = st.connected;
        ev.initial_done = st.initial_done;
    }
    if (impl_->last_sent && impl_->last_sent->lag_bytes == ev.lag_bytes &&
        impl_->last_sent->connected == ev.connected &&
        impl_->last_sent->initial_done == ev.initial_done)
        return;
    impl_->last_sent = ev;
    out.push_back(ev);
}

std::optional<TimePoint> SyncBridge::next_deadline() const {
    return impl_->next_poll;
}

nlohmann::json SyncBridge::status_json() const {
    if (!impl_->engine)
        return {{"connected", true},
                {"state", "no sync roots configured"},
                {"lag_bytes", 0},
                {"initial_done", true}};
    const auto st = impl_->engine->status();
    nlohmann::json j = {{"connected", st.connected},
                        {"state", std::string(sync::to_string(st.role))},
                        {"lag_bytes", st.lag_bytes},
                        {"unacked_changes", st.unacked_changes},
                        {"queued_changes", st.queued_changes},
                        {"oldest_unacked_ms", st.oldest_unacked_ns / 1'000'000},
                        {"initial_done", st.initial_done},
                        {"bytes_sent", st.bytes_sent},
                        {"files_sent", st.files_sent},
                        {"bytes_applied", st.bytes_applied},
                        {"files_applied", st.files_applied},
                        {"errors", st.errors},
                        {"roots", impl_->cfg.sync_roots.size()}};
    if (st.full_backup.last_result != sync::BackupResult::None) {
        j["last_full_backup"] = fmt::format(
            "{} at {}",
            st.full_backup.last_result == sync::BackupResult::Success ? "success" : "failed",
            st.full_backup.last_time_ms);
    }
    return j;
}

nlohmann::json SyncBridge::backup_json() const {
    if (!impl_->engine) return nlohmann::json::object();
    const auto fb = impl_->engine->status().full_backup;
    return {{"in_progress", fb.in_progress},
            {"files_done", fb.files_done},
            {"files_total", fb.files_total},
            {"bytes_done", fb.bytes_done},
            {"bytes_total", fb.bytes_total},
            {"rate_bps", fb.rate_Bps},
            {"eta_s", fb.eta_s}};
}

bool SyncBridge::backup_in_progress() const {
    return impl_->engine && impl_->engine->status().full_backup.in_progress;
}

void SyncBridge::stop() {
    impl_->engine.reset();
}

}  // namespace ha
