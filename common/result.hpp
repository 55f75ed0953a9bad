// ha::Result<T>: an expected-like return value carrying a std::error_code and a context string.
// Mirrors the parts of std::expected we use, so it can become an alias under C++23.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace ha {

struct Error {
    std::error_code code;
    std::string context;  // which call, which object: "bpf_xdp_attach ifindex=4"

    [[nodiscard]] std::string message() const {
        if (!code) return context;
        return context.empty() ? code.message() : context + ": " + code.message();
    }
    // Adds an outer context as the error moves up: "load config: open /etc/x: No such file".
    [[nodiscard]] Error wrap(std::string_view outer) const& {
        return Error{code, std::string(outer) + (context.empty() ? "" : ": " + context)};
    }
};

// Wrapper that makes `return ha::unexpected(err);` read like std::expected code.
struct Unexpected {
    Error error;
};
inline Unexpected unexpected(Error e) {
    return Unexpected{std::move(e)};
}

// An error from a negative-errno return (libbpf, liburing, libmnl style) or from errno.
inline Unexpected errno_error(int err, std::string context) {
    return Unexpected{
        Error{std::error_code(err < 0 ? -err : err, std::system_category()), std::move(context)}};
}
inline Unexpected last_errno(std::string context) {
    return errno_error(errno, std::move(context));
}
// An error that is not an errno: a bad value, a protocol violation.
inline Unexpected fail(std::string context, std::errc code = std::errc::invalid_argument) {
    return Unexpected{Error{std::make_error_code(code), std::move(context)}};
}

template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
    Result(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}  // NOLINT

    [[nodiscard]] bool has_value() const { return v_.index() == 0; }
    explicit operator bool() const { return has_value(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    [[nodiscard]] const Error& error() const { return std::get<1>(v_); }
    template <typename U>
    T value_or(U&& other) const& {
        return has_value() ? value() : static_cast<T>(std::forward<U>(other));
    }

  private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
  public:
    Result() = default;
    Result(Unexpected u) : err_(std::move(u.error)), ok_(false) {}  // NOLINT
    [[nodiscard]] bool has_value() const { return ok_; }
    explicit operator bool() const { return ok_; }
    [[nodiscard]] const Error& error() const { return err_; }

  private:
    Error err_;
    bool ok_ = true;
};

using Status = Result<void>;

}  // namespace ha

// Propagates an error with added context, binding the value on success:
//   HA_TRY_CTX(sock, MnlSocket::open(groups), "link monitor socket");
// `var` names a new variable, so it cannot be parenthesized.
#define HA_TRY_CTX(var, expr, ctx)                                                \
    auto var##_result = (expr);                                                   \
    if (!var##_result) return ::ha::unexpected(var##_result.error().wrap((ctx))); \
    auto var = std::move(*var##_result)  // NOLINT(bugprone-macro-parentheses)
