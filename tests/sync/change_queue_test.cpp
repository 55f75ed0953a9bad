// The active's coalescing change queue: per-path coalescing, rename ordering, bound, oldest age.
#include <gtest/gtest.h>

#include "sync/change_queue.hpp"

namespace ha::sync {
namespace {

TEST(ChangeQueue, CoalescesRepeatedChangesToOnePath) {
    ChangeQueue q;
    EXPECT_TRUE(q.push_sync(0, "a", 10));
    EXPECT_TRUE(q.push_sync(0, "b", 11));
    EXPECT_TRUE(q.push_sync(0, "a", 12, true));
    EXPECT_TRUE(q.push_sync(1, "a", 13));
    EXPECT_EQ(q.size(), 3u);
    EXPECT_EQ(q.oldest_ns(), 10u);
    auto c = q.pop();
    ASSERT_TRUE(c);
    EXPECT_EQ(c->path, "a");
    EXPECT_EQ(c->root, 0);
    EXPECT_TRUE(c->whole) << "a later whole request upgrades the pending entry";
    EXPECT_EQ(c->first_seen_ns, 10u);
    EXPECT_EQ(q.pop()->path, "b");
    EXPECT_EQ(q.pop()->root, 1);
    EXPECT_FALSE(q.pop());
    EXPECT_EQ(q.oldest_ns(), 0u);
}

TEST(ChangeQueue, RenameDropsAPendingSyncOfItsTargetAndKeepsOrder) {
    ChangeQueue q;
    q.push_sync(0, "b", 5);
    q.push_sync(0, "x", 6);
    q.push_rename(0, "a", "b", 7);
    q.push_sync(0, "b", 8);  // written again after the rename: must go after it
    auto c1 = q.pop();
    EXPECT_EQ(c1->path, "x");
    auto c2 = q.pop();
    EXPECT_EQ(c2->kind, Change::Kind::Rename);
    EXPECT_EQ(c2->path, "a");
    EXPECT_EQ(c2->to, "b");
    EXPECT_EQ(c2->first_seen_ns, 5u) << "the dropped change's age is kept";
    auto c3 = q.pop();
    EXPECT_EQ(c3->kind, Change::Kind::Sync);
    EXPECT_EQ(c3->path, "b");
}

TEST(ChangeQueue, OldestFollowsPopsCoalescingAndRenames) {
    ChangeQueue q;
    EXPECT_EQ(q.oldest_ns(), 0u);
    q.push_sync(0, "a", 10);
    q.push_sync(0, "b", 20);
    q.push_sync(0, "a", 30);  // coalesced: keeps 10
    EXPECT_EQ(q.oldest_ns(), 10u);
    q.push_rename(0, "x", "a", 40);  // drops the pending "a", carries its 10 to the back
    EXPECT_EQ(q.oldest_ns(), 10u);
    EXPECT_EQ(q.pop()->path, "b");
    EXPECT_EQ(q.oldest_ns(), 10u) << "the rename at the back holds the oldest time";
    EXPECT_EQ(q.pop()->kind, Change::Kind::Rename);
    EXPECT_EQ(q.oldest_ns(), 0u);
    q.push_sync(0, "c", 50);
    q.push_sync(0, "d", 50);
    EXPECT_EQ(q.pop()->path, "c");
    EXPECT_EQ(q.oldest_ns(), 50u) << "equal times are counted, not merged";
    q.clear();
    EXPECT_EQ(q.oldest_ns(), 0u);
}

TEST(ChangeQueue, BoundedWithOverflowFlag) {
    ChangeQueue q(2);
    EXPECT_TRUE(q.push_sync(0, "a", 1));
    EXPECT_TRUE(q.push_sync(0, "b", 1));
    EXPECT_TRUE(q.push_sync(0, "a", 2)) << "coalescing never overflows";
    EXPECT_FALSE(q.push_sync(0, "c", 3));
    EXPECT_TRUE(q.overflowed());
    q.clear();
    q.clear_overflow();
    EXPECT_TRUE(q.empty());
    EXPECT_FALSE(q.overflowed());
}

}  // namespace
}  // namespace ha::sync
