// The guide's text forms: system events (Figure 11), HA backup log lines (Figure 12), failover
// log lines, ISO-8601 record times, and the stored record -> rendered text path end to end.
#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>

#include "agent/store/event_store.hpp"
#include "agent/store/guide_format.hpp"
#include "fake_loop.hpp"

namespace ha::store {
namespace {

nlohmann::json at(std::string time) {
    return {{"time", std::move(time)}};
}

TEST(GuideFormat, Iso8601WithOffsets) {
    // 2026-11-25 14:48:33.120 UTC
    constexpr std::int64_t kMs = 1'795'618'113'120;
    EXPECT_EQ(iso8601(kMs, 0), "2026-11-25T14:48:33.120+00:00");
    EXPECT_EQ(iso8601(kMs, 3600), "2026-11-25T15:48:33.120+01:00");
    EXPECT_EQ(iso8601(kMs, -5 * 3600 - 1800), "2026-11-25T09:18:33.120-05:30");
    EXPECT_EQ(iso8601(0, 0), "1970-01-01T00:00:00.000+00:00");
    EXPECT_EQ(iso8601(951'782'400'000, 0), "2000-02-29T00:00:00.000+00:00");  // leap day
}

TEST(GuideFormat, HeartbeatAlertContentIsFigure11Text) {
    EXPECT_EQ(heartbeat_alert_content("02:00:00:00:00:02", "2026-11-25 14:48:33", true),
              "MAC: 02:00:00:00:00:02 -- HEARTBEAT 2026-11-25 14:48:33 loose connection");
    EXPECT_EQ(heartbeat_alert_content("02:00:00:00:00:02", "2026-11-25 14:48:37", false),
              "MAC: 02:00:00:00:00:02 -- HEARTBEAT 2026-11-25 14:48:37 has recovered from failure");
    EXPECT_EQ(event_type_text(true), "Generate Alert");
    EXPECT_EQ(event_type_text(false), "Restore to normal");
}

TEST(GuideFormat, BackupLinesAreFigure12Text) {
    auto rec = [](std::string time, bool ok) {
        auto j = at(std::move(time));
        j["result"] = ok ? "success" : "failed";
        return j;
    };
    EXPECT_EQ(format_backup_line(rec("2021-06-15T03:00:35.000+08:00", true)),
              "[2021-06-15 03:00:35 AM] HA backup success!!");
    EXPECT_EQ(format_backup_line(rec("2021-06-11T14:23:05.412+08:00", true)),
              "[2021-06-11 02:23:05 PM] HA backup success!!");
    EXPECT_EQ(format_backup_line(rec("2021-06-11T11:07:23.000+08:00", false)),
              "[2021-06-11 11:07:23 AM] HA backup failed!!");
    EXPECT_EQ(format_backup_line(rec("2021-06-10T21:57:06.000+00:00", true)),
              "[2021-06-10 09:57:06 PM] HA backup success!!");
    // The 12-hour clock has no hour 0: midnight is 12 AM, noon 12 PM.
    EXPECT_EQ(record_time_12h(at("2021-06-10T00:05:00.000+00:00")), "2021-06-10 12:05:00 AM");
    EXPECT_EQ(record_time_12h(at("2021-06-10T12:05:00.000+00:00")), "2021-06-10 12:05:00 PM");
    EXPECT_EQ(record_time_12h(at("garbage")), "?");
    EXPECT_EQ(record_time_12h(nlohmann::json::object()), "?");
}

TEST(GuideFormat, BackupDetails) {
    nlohmann::json ok = {
        {"result", "success"}, {"files", 12}, {"bytes", 3565158}, {"duration_ms", 1200}};
    EXPECT_EQ(format_backup_details(ok), "12 files, 3.4 MiB in 1.2s");
    nlohmann::json bad = {{"result", "failed"}, {"error", "standby unreachable"}};
    EXPECT_EQ(format_backup_details(bad), "error: standby unreachable");
    EXPECT_EQ(human_bytes(512), "512 B");
    EXPECT_EQ(human_bytes(1536), "1.5 KiB");
}

TEST(GuideFormat, EventsTableIsFigure11Columns) {
    std::vector<nlohmann::json> rows = {
        {{"time", "2026-11-25T14:48:37.001+00:00"},
         {"name", "HA failure warning"},
         {"type", "Restore to normal"},
         {"content",
          "MAC: 02:00:00:00:00:02 -- HEARTBEAT 2026-11-25 14:48:37 has recovered "
          "from failure"}},
        {{"time", "2026-11-25T14:48:33.500+00:00"},
         {"name", "HA failure warning"},
         {"raised", true},  // "type" derived from "raised" when absent
         {"content", "MAC: 02:00:00:00:00:02 -- HEARTBEAT 2026-11-25 14:48:33 loose connection"}},
    };
    EXPECT_EQ(format_events_table(rows),
              "TIME                 EVENT NAME          TYPE               CONTENT\n"
              "2026-11-25 14:48:37  HA failure warning  Restore to normal  MAC: 02:00:00:00:00:02 "
              "-- HEARTBEAT 2026-11-25 14:48:37 has recovered from failure\n"
              "2026-11-25 14:48:33  HA failure warning  Generate Alert     MAC: 02:00:00:00:00:02 "
              "-- HEARTBEAT 2026-11-25 14:48:33 loose connection\n");
}

TEST(GuideFormat, FailoverLine) {
    nlohmann::json r = {{"time", "2026-11-25T14:48:40.000+00:00"},
                        {"from", "Standby"},
                        {"to", "Active"},
                        {"term", 8},
                        {"cause", "heartbeat lost on direct link and LAN"},
                        {"detection_us", 7000000},
                        {"takeover_us", 3100},
                        {"service_ready_us", 1200000}};
    EXPECT_EQ(format_failover_line(r),
              "[2026-11-25 02:48:40 PM] Standby -> Active (term 8): heartbeat lost on direct link "
              "and LAN; detection 7s, takeover 3.1ms, service ready 1.2s");
    r.erase("takeover_us");
    r.erase("service_ready_us");
    r.erase("detection_us");
    EXPECT_EQ(format_failover_line(r),
              "[2026-11-25 02:48:40 PM] Standby -> Active (term 8): heartbeat lost on direct link "
              "and LAN");
}

// Stored through the EventStore and rendered back: the local time zone recorded at append time
// is what the operator sees, whatever zone the reader runs in.
TEST(GuideFormat, StoredRecordsRenderInTheirRecordedLocalTime) {
    ::setenv("TZ", "CST-8", 1);  // POSIX form of UTC+8: needs no tz database
    ::tzset();
    api::testing::TempDir tmp;
    auto store = EventStore::open({.dir = tmp.path(), .sync = SyncPolicy::None});
    ASSERT_TRUE(store);
    constexpr std::int64_t kMs = 1'623'697'235'000;  // 2021-06-14 19:00:35 UTC
    std::string when = local_time_text(kMs);
    EXPECT_EQ(when, "2021-06-15 03:00:35");
    ASSERT_TRUE(store->append(BackupRecord{.success = true}, kMs));
    ASSERT_TRUE(store->append(
        SystemEvent{.raised = true,
                    .key = "heartbeat",
                    .content = heartbeat_alert_content("02:00:00:00:00:02", when, true)},
        kMs));
    ::setenv("TZ", "UTC", 1);
    ::tzset();
    auto b = store->last(Stream::Backup, 1);
    auto e = store->last(Stream::Events, 1);
    ASSERT_TRUE(b && e);
    EXPECT_EQ(b->records[0]["time"], "2021-06-15T03:00:35.000+08:00");
    EXPECT_EQ(format_backup_line(b->records[0]), "[2021-06-15 03:00:35 AM] HA backup success!!");
    EXPECT_EQ(format_events_table(e->records),
              "TIME                 EVENT NAME          TYPE            CONTENT\n"
              "2021-06-15 03:00:35  HA failure warning  Generate Alert  MAC: 02:00:00:00:00:02 -- "
              "HEARTBEAT 2021-06-15 03:00:35 loose connection\n");
    ::unsetenv("TZ");
    ::tzset();
}

}  // namespace
}  // namespace ha::store
