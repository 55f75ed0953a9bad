// The daily full backup's next due time, in local time (the guide: "every day at 00:00"). Pure
// apart from the process's time zone rules (localtime_r/mktime), so DST days come out right.
#pragma once

#include <cstdint>

namespace ha::sync {

// Seconds since the epoch of the first local HH:MM (minute_of_day = HH*60+MM) strictly after
// now_s. minute_of_day outside 0..1439 is clamped.
std::int64_t next_daily_run(std::int64_t now_s, int minute_of_day);

}  // namespace ha::sync
