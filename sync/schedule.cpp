#include "sync/schedule.hpp"

#include <algorithm>
#include <ctime>

namespace ha::sync {

std::int64_t next_daily_run(std::int64_t now_s, int minute_of_day) {
    minute_of_day = std::clamp(minute_of_day, 0, 24 * 60 - 1);
    const auto t = static_cast<std::time_t>(now_s);
    std::tm tm{};
    localtime_r(&t, &tm);
    tm.tm_hour = minute_of_day / 60;
    tm.tm_min = minute_of_day % 60;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    std::int64_t due = std::mktime(&tm);
    if (due <= now_s) {
        tm.tm_mday += 1;  // mktime normalises the month/year rollover
        tm.tm_hour = minute_of_day / 60;
        tm.tm_min = minute_of_day % 60;
        tm.tm_isdst = -1;
        due = std::mktime(&tm);
    }
    return due;
}

}  // namespace ha::sync
