// The driver of whole nodes, scripted and deterministic: two RaftDrivers with real RocksDB
// directories, run one iteration at a time on a simulated clock, wired by a network the test
// controls. Idle groups go quiet (only liveness beats remain), a node that goes silent wakes
// the quiet groups it is in, a proposal wakes a quiet group, and a message for a group a node
// does not host is answered so the sender learns the replica is missing.
#include <gtest/gtest.h>

#include <map>

#include "tests/server/scripted_nodes.h"

namespace kv::server {
namespace {

class TwoNodes : public ::testing::Test {
 protected:
  int Run(int ms) { return nodes_.Run(ms); }
  uint64_t Leader(uint64_t group) { return nodes_.Leader(group); }
  internal::GroupDescriptor Descriptor(uint64_t group) { return nodes_.Descriptor(group); }
  // Nothing from `node` reaches the other node any more.
  void Silence(uint64_t node) {
    nodes_.set_hold([node](const testing::ScriptedNodes::Sent& s) { return s.from == node; });
  }
  absl::Time Now() const { return nodes_.Now(); }

  testing::ScriptedNodes nodes_{2};
  std::map<uint64_t, RaftDriver*> drivers_{{1, &nodes_.node(1)}, {2, &nodes_.node(2)}};
};

TEST_F(TwoNodes, IdleGroupsGoQuietAndOnlyBeatsRemain) {
  Run(3000);
  uint64_t leader = Leader(1);
  ASSERT_NE(leader, 0u);
  for (uint64_t id = 2; id < 12; ++id) {
    for (auto& [n, d] : drivers_) d->CreateGroup(Descriptor(id), {}, nullptr);
  }
  Run(4000);
  for (uint64_t id = 1; id < 12; ++id) {
    for (auto& [n, d] : drivers_) {
      EXPECT_TRUE(d->Status(id).quiesced) << "group " << id << " on node " << n;
      EXPECT_NE(d->Status(id).leader_id, 0u);
    }
  }
  EXPECT_EQ(Run(2000), 0) << "quiet groups send nothing; only the node liveness beats flow";
  EXPECT_EQ(drivers_[1]->counters().quiesced, 11u);

  // A proposal wakes its group, commits, and the group goes quiet again.
  bool done = false;
  internal::Command put;
  put.mutable_put()->set_key("k");
  put.mutable_put()->set_value("v");
  uint64_t l = Leader(5);
  ASSERT_NE(l, 0u);
  drivers_[l]->Propose(5, put, v1::WRITE_MAJORITY, Now() + absl::Seconds(5),
                       [&](absl::StatusOr<WriteOutcome> r) { done = r.ok(); });
  EXPECT_GT(Run(200), 0);
  EXPECT_TRUE(done);
  Run(3000);
  EXPECT_TRUE(drivers_[1]->Status(5).quiesced);
  EXPECT_TRUE(drivers_[2]->Status(5).quiesced);
}

TEST_F(TwoNodes, ASilentNodeWakesTheQuietGroupsItIsIn) {
  Run(3000);
  uint64_t leader = Leader(1);
  ASSERT_NE(leader, 0u);
  uint64_t follower = 3 - leader;
  Run(3000);
  ASSERT_TRUE(drivers_[follower]->Status(1).quiesced);
  Silence(leader);  // nothing from the leader's node reaches the follower any more
  Run(1500);        // past the liveness lapse (an election timeout)
  GroupStatus s = drivers_[follower]->Status(1);
  EXPECT_FALSE(s.quiesced) << "woken by the lapse of its leader's node";
  EXPECT_NE(s.role, raft::Role::kFollower) << "and campaigning for lack of a leader";
}

TEST_F(TwoNodes, AMessageForAGroupNotHostedIsAnsweredAndReported) {
  Run(3000);
  // Group 9 exists on node 1 only: its votes reach node 2, which answers that it has no replica.
  drivers_[1]->CreateGroup(Descriptor(9), {}, nullptr);
  Run(3000);
  EXPECT_EQ(drivers_[1]->Status(9).missing_on, std::set<uint64_t>{2});
  EXPECT_FALSE(drivers_[2]->board().Hosts(9));
  // Once node 2 creates its replica the report clears.
  drivers_[2]->CreateGroup(Descriptor(9), {}, nullptr);
  Run(4000);
  EXPECT_TRUE(drivers_[1]->Status(9).missing_on.empty());
  EXPECT_NE(Leader(9), 0u);
}

}  // namespace
}  // namespace kv::server
