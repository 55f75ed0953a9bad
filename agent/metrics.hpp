// A fixed-bucket latency histogram: log-spaced buckets from 1 us to ~67 s, no allocation per
// sample, percentiles by interpolation inside a bucket. Single-threaded (the loop owns it).
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>

namespace ha {

class Histogram {
  public:
    static constexpr int kBuckets = 104;  // 4 per octave over 26 octaves of microseconds

    void add(std::chrono::nanoseconds d) {
        const double us = static_cast<double>(d.count()) / 1000.0;
        ++buckets_[static_cast<std::size_t>(bucket_of(us))];
        ++count_;
        sum_us_ += us;
        if (us > max_us_) max_us_ = us;
    }
    [[nodiscard]] std::uint64_t count() const { return count_; }
    [[nodiscard]] double max_us() const { return max_us_; }
    [[nodiscard]] double mean_us() const {
        return count_ ? sum_us_ / static_cast<double>(count_) : 0;
    }
    // q in [0,1]; the upper edge of the bucket holding the q-th sample (a conservative estimate).
    [[nodiscard]] double percentile_us(double q) const {
        if (count_ == 0) return 0;
        const auto target = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
        std::uint64_t seen = 0;
        for (int b = 0; b < kBuckets; ++b) {
            seen += buckets_[static_cast<std::size_t>(b)];
            if (seen >= target && seen > 0) return std::min(upper_edge(b), max_us_);
        }
        return max_us_;
    }
    // Prometheus buckets: cumulative counts at each upper edge.
    template <typename F>
    void for_each_bucket(F&& f) const {
        std::uint64_t cum = 0;
        for (int b = 0; b < kBuckets; ++b) {
            cum += buckets_[static_cast<std::size_t>(b)];
            if (buckets_[static_cast<std::size_t>(b)] != 0) f(upper_edge(b), cum);
        }
    }
    [[nodiscard]] double sum_us() const { return sum_us_; }

  private:
    static int bucket_of(double us) {
        if (us <= 1.0) return 0;
        int b = static_cast<int>(std::log2(us) * 4.0) + 1;
        return b >= kBuckets ? kBuckets - 1 : b;
    }
    static double upper_edge(int b) {
        return b == 0 ? 1.0 : std::exp2(static_cast<double>(b) / 4.0);
    }

    std::array<std::uint64_t, kBuckets> buckets_{};
    std::uint64_t count_ = 0;
    double sum_us_ = 0;
    double max_us_ = 0;
};

}  // namespace ha
