// Liveness of the PBX, watched from the active box: a deadlocked PBX keeps its process alive but
// stops answering. Either a SIP OPTIONS request over UDP (any SIP response proves the PBX's
// transaction layer runs) or a command that must exit 0 within the timeout. `failures`
// consecutive misses make a software fault; the next answer clears it. Also watches the core dump
// folder: a new core file is a software fault at once. Loop thread only; no blocking calls.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "agent/core/config.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::service {

struct ProbeVerdict {
    bool fault = false;  // true: raise a software fault; false: clear it
    std::string detail;
};

class LivenessProbe {
  public:
    // default_target: the cluster IP, used when service.sip_target is empty.
    static Result<LivenessProbe> create(const core::ServiceConfig& cfg,
                                        const IpAddr& default_target);
    LivenessProbe(LivenessProbe&&) noexcept = default;
    LivenessProbe& operator=(LivenessProbe&&) noexcept = default;
    ~LivenessProbe();

    // Start/stop probing (the PBX runs only on the active). Stopping forgets failures.
    void enable(bool on, TimePoint now);
    [[nodiscard]] bool enabled() const { return enabled_; }
    // Readable: a SIP response (SIP probe) or the command's exit (pidfd). -1 when idle.
    [[nodiscard]] int fd() const;
    std::optional<ProbeVerdict> on_readable(TimePoint now);
    std::optional<ProbeVerdict> on_deadline(TimePoint now);
    [[nodiscard]] std::optional<TimePoint> next_deadline() const;
    [[nodiscard]] unsigned consecutive_failures() const { return failures_; }
    [[nodiscard]] std::uint64_t probes_sent() const { return sent_; }
    // Answers since the probe was last enabled: the PBX is ready to serve once this is nonzero.
    [[nodiscard]] std::uint64_t answers() const { return answers_; }

  private:
    LivenessProbe() = default;
    std::optional<ProbeVerdict> success();
    std::optional<ProbeVerdict> failure(const std::string& why, TimePoint now);
    Status send_options(TimePoint now);
    Status spawn_command(TimePoint now);
    void reap_command();

    core::ServiceConfig cfg_;
    IpAddr target_;
    std::uint16_t port_ = 5060;
    UniqueFd sock_;
    UniqueFd pidfd_;
    pid_t child_ = -1;
    bool enabled_ = false;
    bool outstanding_ = false;
    bool faulted_ = false;
    unsigned failures_ = 0;
    std::uint64_t sent_ = 0;
    std::uint64_t answers_ = 0;
    std::uint32_t cseq_ = 0;
    std::string call_id_;
    TimePoint next_send_{};
    TimePoint answer_by_{};
    // A PBX that is still starting is not deadlocked: misses count only after its first answer
    // or after this grace time.
    TimePoint grace_until_{};
};

// inotify on the core dump folder; each new file is reported once.
class CoreDumpWatch {
  public:
    static Result<CoreDumpWatch> create(const std::string& dir);
    [[nodiscard]] int fd() const { return fd_.get(); }
    // Names of core files that appeared since the last call.
    std::vector<std::string> drain();

  private:
    UniqueFd fd_;
};

}  // namespace ha::service
