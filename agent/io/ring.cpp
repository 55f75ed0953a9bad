#include "agent/io/ring.hpp"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/log.hpp"

namespace ha::io {

Result<Ring> Ring::create(unsigned entries) {
    Ring r;
    int rc = io_uring_queue_init(entries, &r.ring_, 0);
    if (rc < 0) return errno_error(rc, fmt::format("io_uring_queue_init entries={}", entries));
    r.live_ = true;
    io_uring_probe* probe = io_uring_get_probe_ring(&r.ring_);
    if (probe == nullptr) return fail("io_uring_get_probe_ring failed: kernel too old");
    struct Needed {
        int op;
        const char* name;
    };
    static constexpr Needed kNeeded[] = {
        {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"},
        {IORING_OP_TIMEOUT, "IORING_OP_TIMEOUT"},
        {IORING_OP_RECVMSG, "IORING_OP_RECVMSG"},
        {IORING_OP_SENDMSG, "IORING_OP_SENDMSG"},
        {IORING_OP_READ, "IORING_OP_READ"},
        {IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL"},
    };
    for (const auto& n : kNeeded) {
        if (!io_uring_opcode_supported(probe, n.op)) {
            io_uring_free_probe(probe);
            return fail(fmt::format("io_uring lacks {}: kernel 5.19 or newer is required", n.name),
                        std::errc::function_not_supported);
        }
    }
    io_uring_free_probe(probe);
    return r;
}

Ring::Ring(Ring&& o) noexcept : ring_(o.ring_), live_(o.live_) {
    o.live_ = false;
}

Ring::~Ring() {
    if (live_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* Ring::sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    if (s == nullptr) {
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    HA_ASSERT(s != nullptr);
    return s;
}

void Ring::poll(int fd, unsigned mask, Completion* c) {
    io_uring_sqe* s = sqe();
    io_uring_prep_poll_add(s, fd, mask);
    io_uring_sqe_set_data(s, c);
}

Result<unsigned> Ring::run_once(std::optional<TimePoint> deadline) {
    io_uring_cqe* cqe = nullptr;
    int rc;
    if (deadline) {
        auto left = *deadline - Clock::now();
        if (left < Duration::zero()) left = Duration::zero();
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        __kernel_timespec ts{};
        ts.tv_sec = ns / 1'000'000'000;
        ts.tv_nsec = ns % 1'000'000'000;
        rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    } else {
        rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, nullptr, nullptr);
    }
    if (rc == -ETIME || rc == -EINTR || rc == -EAGAIN) return 0u;
    if (rc < 0) return errno_error(rc, "io_uring_submit_and_wait_timeout");
    unsigned head = 0, count = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        auto* c = static_cast<Completion*>(io_uring_cqe_get_data(cqe));
        if (c != nullptr) c->completed(cqe->res, cqe->flags);
        ++count;
    }
    io_uring_cq_advance(&ring_, count);
    return count;
}

}  // namespace ha::io
