#include "agent/sync_bridge.hpp"

#include "common/log.hpp"

namespace ha {

struct SyncBridge::Impl {
    core::Config cfg;
    store::EventStore& events;
    core::State state = core::State::Booting;
    std::optional<core::EvSync> last_sent;
    TimePoint next_poll{};
};

SyncBridge::SyncBridge(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SyncBridge::~SyncBridge() = default;

Result<std::unique_ptr<SyncBridge>> SyncBridge::create(const core::Config& cfg, const Key&,
                                                       store::EventStore& events) {
    auto impl = std::unique_ptr<Impl>(new Impl{cfg, events});
    return std::unique_ptr<SyncBridge>(new SyncBridge(std::move(impl)));
}

void SyncBridge::set_role(core::State state) { impl_->state = state; }
void SyncBridge::request_full_sync() {}
void SyncBridge::quarantine(std::uint64_t) {}
std::string SyncBridge::start_full_backup(core::State) { return "no sync roots are configured"; }
int SyncBridge::event_fd() const { return -1; }
void SyncBridge::drain(core::Machine&, std::deque<core::Event>&) {}

void SyncBridge::poll(core::Machine&, std::deque<core::Event>& out, TimePoint now) {
    if (now < impl_->next_poll) return;
    impl_->next_poll = now + std::chrono::milliseconds(100);
    // With no roots there is nothing to replicate: drained, and a standby is synced at once.
    core::EvSync ev{0, std::chrono::nanoseconds(0), true, true};
    if (impl_->last_sent && impl_->last_sent->lag_bytes == ev.lag_bytes &&
        impl_->last_sent->connected == ev.connected &&
        impl_->last_sent->initial_done == ev.initial_done)
        return;
    impl_->last_sent = ev;
    out.push_back(ev);
}

std::optional<TimePoint> SyncBridge::next_deadline() const { return impl_->next_poll; }
nlohmann::json SyncBridge::status_json() const {
    return {{"connected", true}, {"state", "no sync roots configured"}, {"lag_bytes", 0},
            {"initial_done", true}};
}
nlohmann::json SyncBridge::backup_json() const { return nlohmann::json::object(); }
bool SyncBridge::backup_in_progress() const { return false; }
void SyncBridge::stop() {}

}  // namespace ha
