// Next due time of the daily full backup: same day, next day, month/year rollover, DST.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <ctime>

#include "sync/schedule.hpp"

namespace ha::sync {
namespace {

class TzGuard {
  public:
    explicit TzGuard(const char* tz) {
        const char* old = std::getenv("TZ");
        had_ = old != nullptr;
        if (had_) old_ = old;
        ::setenv("TZ", tz, 1);
        ::tzset();
    }
    ~TzGuard() {
        if (had_) {
            ::setenv("TZ", old_.c_str(), 1);
        } else {
            ::unsetenv("TZ");
        }
        ::tzset();
    }

  private:
    bool had_ = false;
    std::string old_;
};

TEST(NextDailyRun, LaterTodayOrTomorrow) {
    TzGuard tz("UTC");
    const std::int64_t t = 1'700'000'000;                       // 2023-11-14 22:13:20 UTC
    EXPECT_EQ(next_daily_run(t, 23 * 60), 1'700'002'800);       // 23:00 the same day
    EXPECT_EQ(next_daily_run(t, 0), 1'700'006'400);             // midnight, next day
    EXPECT_EQ(next_daily_run(1'700'006'400, 0), 1'700'092'800)  // exactly due: the day after
        << "a run at the due second schedules the next day";
}

TEST(NextDailyRun, YearRolloverAndDaylightSaving) {
    {
        TzGuard tz("UTC");
        EXPECT_EQ(next_daily_run(1'704'063'599, 0),
                  1'704'067'200);  // 2023-12-31 22:59:59 -> 2024-01-01
    }
    TzGuard tz("Europe/Berlin");
    // 2024-03-31 is 23 hours long in Berlin: from 00:00 CET that day, the next midnight is 23 h on.
    const std::int64_t march31_midnight = 1'711'839'600;  // 2024-03-31 00:00 CET
    EXPECT_EQ(next_daily_run(march31_midnight, 0), march31_midnight + 23 * 3600);
}

}  // namespace
}  // namespace ha::sync
