// TermStore: round trip, terms never go backwards, a corrupt file is an error naming it, and a
// writer killed at arbitrary points always leaves a readable old or new value (never torn).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/store/term_store.hpp"
#include "common/atomic_file.hpp"
#include "fake_loop.hpp"

namespace ha::store {
namespace {

using api::testing::TempDir;

TEST(TermStore, MissingFileMeansANewBoxAtTermZero) {
    TempDir tmp;
    TermStore ts(tmp.path() + "/state");
    auto rec = ts.load();
    ASSERT_TRUE(rec) << rec.error().message();
    EXPECT_EQ(rec->term, 0u);
    EXPECT_EQ(rec->role, "");
}

TEST(TermStore, SavesAndLoads) {
    TempDir tmp;
    TermStore ts(tmp.path() + "/state");  // the directory is created on first save
    ASSERT_TRUE(ts.save({.term = 7, .role = "Active"}));
    auto rec = ts.load();
    ASSERT_TRUE(rec);
    EXPECT_EQ(*rec, (TermRecord{.term = 7, .role = "Active"}));
    ASSERT_TRUE(ts.save({.term = 7, .role = "Standby"}));  // same term, new role: allowed
    ASSERT_TRUE(ts.save({.term = 9, .role = "Active"}));
    EXPECT_EQ(TermStore(tmp.path() + "/state").load()->term, 9u);
    auto text = read_file(ts.path());
    ASSERT_TRUE(text);
    EXPECT_EQ(*text, "{\"role\":\"Active\",\"term\":9}\n");
}

TEST(TermStore, RefusesToGoBackwardsAndKeepsTheValue) {
    TempDir tmp;
    TermStore ts(tmp.path());
    ASSERT_TRUE(ts.save({.term = 5, .role = "Active"}));
    auto st = ts.save({.term = 4, .role = "Active"});
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("5 -> 4"), std::string::npos) << st.error().message();
    EXPECT_EQ(ts.load()->term, 5u);
}

TEST(TermStore, CorruptFileIsAnErrorNamingTheFile) {
    TempDir tmp;
    TermStore ts(tmp.path());
    for (const char* bad :
         {"garbage", "{\"term\":-3}", "{\"term\":\"7\"}", "[1]", "{\"term\":1,"}) {
        ASSERT_TRUE(write_file_atomic(ts.path(), bad));
        auto rec = ts.load();
        ASSERT_FALSE(rec) << bad;
        EXPECT_NE(rec.error().message().find(ts.path()), std::string::npos)
            << rec.error().message();
    }
}

TEST(TermStore, KilledWriterLeavesAWholeValue) {
    TempDir tmp;
    for (int round = 0; round < 3; ++round) {
        std::string dir = tmp.path() + "/r" + std::to_string(round);
        TermStore ts(dir);
        ASSERT_TRUE(ts.save({.term = 1, .role = "Active"}));
        pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            TermStore w(dir);
            for (std::uint64_t t = 2;; ++t) {
                if (!w.save({.term = t, .role = t % 2 ? "Active" : "Standby"})) ::_exit(1);
            }
        }
        // Let the writer get well into its loop (each save is a full fsync+rename), then kill
        // it wherever it is: in write, fsync, rename or between saves.
        std::uint64_t seen = 0;
        while (seen < 5u + static_cast<std::uint64_t>(round) * 7u) {
            auto rec = ts.load();
            ASSERT_TRUE(rec) << rec.error().message();
            seen = rec->term;
        }
        ASSERT_EQ(::kill(child, SIGKILL), 0);
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        auto rec = ts.load();
        ASSERT_TRUE(rec) << rec.error().message();
        EXPECT_GE(rec->term, seen);
        EXPECT_TRUE(rec->role == "Active" || rec->role == "Standby");
    }
}

}  // namespace
}  // namespace ha::store
