#include "sync/thread.hpp"

#include <cerrno>

#include "common/log.hpp"

namespace ha::sync {

Result<std::unique_ptr<SmallThread>> SmallThread::start(const char* name, std::function<void()> fn,
                                                        std::size_t stack_bytes) {
    std::unique_ptr<SmallThread> t(new SmallThread());
    t->name_ = name;
    t->fn_ = std::move(fn);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack_bytes);
    const int rc = pthread_create(&t->thread_, &attr, &SmallThread::trampoline, t.get());
    pthread_attr_destroy(&attr);
    if (rc != 0) return errno_error(rc, fmt::format("start thread {}", name));
    return t;
}

void* SmallThread::trampoline(void* self) {
    auto* t = static_cast<SmallThread*>(self);
    pthread_setname_np(pthread_self(), t->name_);
    t->fn_();
    return nullptr;
}

SmallThread::~SmallThread() {
    pthread_join(thread_, nullptr);
}

}  // namespace ha::sync
