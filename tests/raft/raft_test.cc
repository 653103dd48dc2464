// Scripted tests of the Raft core: a few nodes wired by an in-memory, synchronous network.
#include "raft/raft.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include "tests/raft/scripted_cluster.h"

namespace kv::raft {
namespace {

using testing::Cluster;
using testing::Voters;

TEST(RaftTest, ElectsOneLeaderWhichCommitsANoopOfItsTerm) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  ASSERT_NE(leader, 0u);
  int leaders = 0;
  for (auto& [id, r] : c.nodes) leaders += r->role() == Role::kLeader;
  EXPECT_EQ(leaders, 1);
  EXPECT_EQ(c[leader].commit(), 2u);
  for (auto& [id, r] : c.nodes) EXPECT_EQ(r->leader(), leader);
}

TEST(RaftTest, ProposalsAreCommittedOnEveryNodeInOrder) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c[leader].Propose("cmd" + std::to_string(i)).ok());
  c.Pump();
  c.Tick(2);
  for (auto& [id, r] : c.nodes) {
    ASSERT_EQ(c.committed[id].size(), 22u) << "node " << id;
    EXPECT_EQ(c.committed[id][21].data(), "cmd19");
  }
}

TEST(RaftTest, FollowerRejectsProposals) {
  Cluster c(3);
  c.Tick(40);
  uint64_t follower = c.Leader() % 3 + 1;
  EXPECT_EQ(c[follower].Propose("x").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RaftTest, LeaderCutOffFromItsQuorumStopsGrowingItsLog) {
  Cluster c(3, [](Config& cfg) { cfg.max_uncommitted_bytes = 1000; });
  c.Tick(40);
  uint64_t leader = c.Leader();
  c.drop = [&](const raftpb::Message& m) { return m.from() == leader; };
  std::string value(300, 'v');
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c[leader].Propose(value).ok()) << i;
  c.Pump();
  // 900 bytes wait for a quorum; 300 more would pass the bound.
  auto refused = c[leader].Propose(value);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  uint64_t last = c[leader].last_index();
  EXPECT_EQ(c[leader].Propose(std::string(50, 's')).status().code(), absl::StatusCode::kOk);
  EXPECT_EQ(c[leader].last_index(), last + 1);
  // Once the quorum answers again the tail commits and proposals are accepted again.
  c.drop = nullptr;
  c.Tick(2);
  EXPECT_EQ(c[leader].commit(), last + 1);
  EXPECT_TRUE(c[leader].Propose(value).ok());
}

TEST(RaftTest, OneProposalLargerThanTheBoundIsAcceptedWhenNothingIsUncommitted) {
  Cluster c(3, [](Config& cfg) { cfg.max_uncommitted_bytes = 100; });
  c.Tick(40);
  uint64_t leader = c.Leader();
  EXPECT_TRUE(c[leader].Propose(std::string(500, 'x')).ok());
  EXPECT_EQ(c[leader].Propose("y").status().code(), absl::StatusCode::kResourceExhausted);
  c.Pump();
  EXPECT_TRUE(c[leader].Propose("y").ok());
}

TEST(RaftTest, PreVoteKeepsAPartitionedNodeFromInflatingItsTerm) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  uint64_t lonely = leader % 3 + 1;
  uint64_t term = c[leader].term();
  c.isolated = {lonely};
  c.Tick(200);
  EXPECT_EQ(c[lonely].term(), term);  // pre-votes failed, so it never became a candidate
  c.isolated.clear();
  c.Tick(20);
  EXPECT_EQ(c.Leader(), leader);  // rejoining does not disrupt the leader
  EXPECT_EQ(c[leader].term(), term);
}

TEST(RaftTest, CheckQuorumMakesAnIsolatedLeaderStepDown) {
  Cluster c(3);
  c.Tick(40);
  uint64_t old_leader = c.Leader();
  c.isolated = {old_leader};
  c.Tick(30);
  EXPECT_NE(c[old_leader].role(), Role::kLeader);
  uint64_t new_leader = c.Leader();
  ASSERT_NE(new_leader, 0u);
  EXPECT_NE(new_leader, old_leader);
  EXPECT_GT(c[new_leader].term(), c[old_leader].term());
}

TEST(RaftTest, OneAppendPerFollowerForABatchOfProposals) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  c.sent.clear();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(c[leader].Propose("p").ok());
  Ready rd = c[leader].GetReady();
  int appends = 0;
  for (const auto& m : rd.messages) {
    if (m.type() == raftpb::MSG_APPEND) {
      ++appends;
      EXPECT_EQ(m.entries_size(), 100);
    }
  }
  EXPECT_EQ(appends, 2);
  c[leader].Advance(rd);
}

TEST(RaftTest, PipeliningIsBoundedByMaxInflight) {
  Cluster c(3, [](Config& cfg) { cfg.max_inflight = 4; });
  c.Tick(40);
  uint64_t leader = c.Leader();
  uint64_t follower = leader % 3 + 1;
  // The follower receives appends but its answers are lost.
  c.drop = [&](const raftpb::Message& m) {
    return m.from() == follower && m.type() == raftpb::MSG_APPEND_RESP;
  };
  c.sent.clear();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c[leader].Propose("p").ok());
    c.Pump();
  }
  int with_entries = 0;
  for (const auto& m : c.sent) {
    with_entries += m.from() == leader && m.to() == follower && m.type() == raftpb::MSG_APPEND &&
                    m.entries_size() > 0;
  }
  EXPECT_EQ(with_entries, 4) << "only empty commit updates may exceed the window";
}

TEST(RaftTest, ConflictBackoffSkipsAWholeTerm) {
  // Node 1 will lead with log terms [1,1,1,3,3]; node 2 has a long divergent tail of term 2.
  Cluster c(3);
  auto make = [](std::vector<uint64_t> terms) {
    std::vector<raftpb::Entry> es;
    for (size_t i = 0; i < terms.size(); ++i) {
      raftpb::Entry e;
      e.set_index(i + 1);
      e.set_term(terms[i]);
      es.push_back(e);
    }
    return es;
  };
  raftpb::SnapshotMeta snap;
  *snap.mutable_conf() = Voters({1, 2, 3});
  raftpb::HardState hs1, hs2;
  hs1.set_term(3);
  hs2.set_term(2);
  c[1].Restore(hs1, snap, make({1, 1, 1, 3, 3}), 0);
  c[2].Restore(hs2, snap, make({1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2}), 0);
  c[3].Restore(hs1, snap, make({1, 1, 1, 3, 3}), 0);
  c.Elect(1);
  ASSERT_EQ(c.Leader(), 1u);
  c.Tick(3);
  int rejects = 0;
  for (const auto& m : c.sent)
    rejects += m.from() == 2 && m.type() == raftpb::MSG_APPEND_RESP && m.reject();
  EXPECT_LE(rejects, 2) << "one rejection per conflicting term, not per entry";
  EXPECT_EQ(c[2].last_index(), c[1].last_index());
  EXPECT_EQ(c[2].log().Term(5), 3u);
}

TEST(RaftTest, LeaderCommitsEarlierTermEntriesOnlyThroughItsOwn) {
  // Raft §5.4.2: an entry of an earlier term is not committed by counting replicas alone.
  Cluster c(3);
  raftpb::SnapshotMeta snap;
  *snap.mutable_conf() = Voters({1, 2, 3});
  raftpb::Entry old;
  old.set_index(1);
  old.set_term(1);
  raftpb::HardState hs;
  hs.set_term(1);
  for (uint64_t id : {1, 2, 3}) c[id].Restore(hs, snap, {old}, 0);
  c.drop = [](const raftpb::Message& m) { return m.type() == raftpb::MSG_APPEND; };
  c.Elect(1);
  EXPECT_EQ(c[1].commit(), 0u);  // index 1 is replicated everywhere, but is of term 1
  c.drop = nullptr;
  c.Tick(2);
  EXPECT_EQ(c[1].commit(), 2u);  // committing the term-2 no-op commits index 1 too
}

TEST(RaftTest, ReadIndexNeedsAQuorumAndFailsOnStepDown) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  c[leader].ReadIndex(7);
  c.Pump();
  ASSERT_EQ(c.read_states[leader].size(), 1u);
  EXPECT_EQ(c.read_states[leader][0].request_id, 7u);
  EXPECT_EQ(c.read_states[leader][0].index, c[leader].commit());

  c.isolated = {leader};
  c[leader].ReadIndex(8);
  c.Pump();
  EXPECT_EQ(c.read_states[leader].size(), 1u) << "no quorum: the read must wait";
  c.Tick(30);  // check-quorum: the leader steps down and fails the read
  EXPECT_EQ(c.failed_reads[leader], std::vector<uint64_t>{8});
}

TEST(RaftTest, FollowerReadIndexGoesThroughTheLeader) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  ASSERT_TRUE(c[leader].Propose("x").ok());
  c.Pump();
  uint64_t follower = leader % 3 + 1;
  c[follower].ReadIndex(42);
  c.Pump();
  ASSERT_EQ(c.read_states[follower].size(), 1u);
  EXPECT_EQ(c.read_states[follower][0].index, c[leader].commit());
}

TEST(RaftTest, LeaseHoldsAfterAQuorumHeartbeatAndExpiresWithoutOne) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  c.Tick(1);
  EXPECT_TRUE(c[leader].HasLease());
  c.isolated = {leader};
  c.Tick(7);  // election_tick 10 - margin 2: still within the lease
  EXPECT_TRUE(c[leader].HasLease());
  c.Tick(2);
  EXPECT_FALSE(c[leader].HasLease()) << "no lease past election_tick - margin without acks";
}

TEST(RaftTest, ASplitChildThatWinsTheNextTermStartsWithTheLeaseItInherited) {
  // Two fresh groups, as the replicas of a split child start: leaderless, together.
  Cluster inherits(3), plain(3);
  inherits[1].InheritLease(6);
  inherits[1].CampaignNow();
  inherits.Pump();
  plain[1].CampaignNow();
  plain.Pump();
  ASSERT_EQ(inherits.Leader(), 1u);
  ASSERT_EQ(plain.Leader(), 1u);
  EXPECT_TRUE(inherits[1].HasLease()) << "no heartbeat round yet: the lease is the inherited one";
  EXPECT_FALSE(plain[1].HasLease()) << "without one, a new leader waits for a heartbeat round";
  inherits.isolated = {1};
  inherits.Tick(5);
  EXPECT_TRUE(inherits[1].HasLease());
  inherits.Tick(1);
  EXPECT_FALSE(inherits[1].HasLease()) << "it lasts only the ticks it was given";
}

TEST(RaftTest, AnInheritedLeaseIsVoidUnlessTheVeryNextTermIsWon) {
  Cluster c(3);
  c[1].InheritLease(8);
  c.isolated = {1};
  c[1].CampaignNow();  // its votes are lost
  c.Pump();
  c.isolated.clear();
  c[1].CampaignNow();  // wins, but a term later than the one the lease was inherited for
  c.Pump();
  ASSERT_EQ(c.Leader(), 1u);
  EXPECT_FALSE(c[1].HasLease());
}

TEST(RaftTest, LeadershipTransferHandsOverAndEndsTheLease) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  uint64_t target = leader % 3 + 1;
  c[leader].TransferLeadership(target);
  EXPECT_FALSE(c[leader].HasLease());
  c.Pump();
  EXPECT_EQ(c.Leader(), target);
  EXPECT_EQ(c[leader].role(), Role::kFollower);
}

TEST(RaftTest, LearnersReplicateButDoNotVoteOrCount) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  // Node 4 joins empty (no membership of its own) and is added as a learner.
  Config cfg;
  cfg.id = 4;
  cfg.group_id = 1;
  c.nodes[4] = std::make_unique<Raft>(cfg);
  raftpb::ConfChange cc;
  cc.set_type(raftpb::CONF_ADD_LEARNER);
  cc.set_node_id(4);
  cc.set_address("n4");
  ASSERT_TRUE(c[leader].ProposeConfChange(cc).ok());
  c.Pump();
  c.Tick(3);
  EXPECT_TRUE(c[leader].IsMember(4));
  EXPECT_FALSE(c[leader].IsVoter(4));
  EXPECT_EQ(c[4].last_index(), c[leader].last_index());
  c[4].Tick();
  for (int i = 0; i < 100; ++i) c[4].Tick();
  EXPECT_EQ(c[4].role(), Role::kFollower) << "a learner never campaigns";
  // Another change while one is pending is refused; after it commits, promotion works.
  cc.set_type(raftpb::CONF_PROMOTE_LEARNER);
  ASSERT_TRUE(c[leader].ProposeConfChange(cc).ok());
  EXPECT_EQ(c[leader].ProposeConfChange(cc).status().code(), absl::StatusCode::kUnavailable);
  c.Pump();
  c.Tick(3);
  EXPECT_TRUE(c[leader].IsVoter(4));
  EXPECT_TRUE(c[4].IsVoter(4));
}

TEST(RaftTest, AReplicaThatKnowsNoMembershipGrantsNoVote) {
  // Made empty to receive a snapshot (a node the group may have been moved off before, its old
  // state gone): its empty log is "up to date" with any candidate's, so a vote from it could
  // elect a candidate missing committed entries.
  Config cfg;
  cfg.id = 4;
  cfg.group_id = 1;
  Raft empty(cfg);
  for (auto type : {raftpb::MSG_PRE_VOTE, raftpb::MSG_VOTE}) {
    raftpb::Message m;
    m.set_type(type);
    m.set_group_id(1);
    m.set_from(3);
    m.set_to(4);
    m.set_term(5);
    m.set_index(3);
    m.set_log_term(3);
    empty.Step(m);
    Ready rd = empty.GetReady();
    ASSERT_EQ(rd.messages.size(), 1u);
    EXPECT_TRUE(rd.messages[0].reject()) << raftpb::MessageType_Name(type);
    empty.Advance(rd);
  }
}

TEST(RaftTest, AnEmptySplitChildVotesOnlyForACandidateThatHoldsTheSplit) {
  // Made empty because its parent replica skipped the split (index 40) by a snapshot: the other
  // replicas start from the split entry, so a candidate whose log reaches it may have its vote
  // (without, a child with one full replica and two empty ones never elects: seen in the
  // simulation); a candidate below it may not.
  Config cfg;
  cfg.id = 4;
  cfg.group_id = 1;
  Raft empty(cfg);
  empty.SetEmptyVoteFloor(40);
  auto ask = [&](uint64_t from, uint64_t term, uint64_t index) {
    raftpb::Message m;
    m.set_type(raftpb::MSG_VOTE);
    m.set_group_id(1);
    m.set_from(from);
    m.set_to(4);
    m.set_term(term);
    m.set_index(index);
    m.set_log_term(2);
    empty.Step(m);
    Ready rd = empty.GetReady();
    EXPECT_EQ(rd.messages.size(), 1u);
    bool granted = !rd.messages.empty() && !rd.messages[0].reject();
    empty.Advance(rd);
    return granted;
  };
  EXPECT_FALSE(ask(3, 5, 39)) << "a candidate below the split";
  EXPECT_TRUE(ask(2, 6, 45)) << "a candidate holding the split";
}

TEST(RaftTest, MembershipChangesRefuseUnreplicatedLearnersAndTakenAddresses) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  raftpb::ConfChange cc;
  cc.set_type(raftpb::CONF_ADD_LEARNER);
  cc.set_node_id(9);
  cc.set_address("n2");  // node 2's address
  EXPECT_EQ(c[leader].ProposeConfChange(cc).status().code(), absl::StatusCode::kAlreadyExists);
  cc.set_address("n9");
  ASSERT_TRUE(c[leader].ProposeConfChange(cc).ok());  // node 9 never starts
  c.Pump();
  c.Tick(3);
  cc.set_type(raftpb::CONF_PROMOTE_LEARNER);
  auto promoted = c[leader].ProposeConfChange(cc);
  EXPECT_EQ(promoted.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(c[leader].IsVoter(9));
}

TEST(RaftTest, ForceNewClusterLeavesOneVoterThatElectsItself) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  ASSERT_TRUE(c[leader].Propose("x").ok());
  c.Pump();
  // Nodes 2 and 3 are gone; node 1 appends the forced change to its own log and restarts.
  c.isolated = {2, 3};
  const Raft& old = c[1];
  std::vector<raftpb::Entry> log;
  for (uint64_t i = old.first_index(); i <= old.last_index(); ++i) log.push_back(old.log().At(i));
  raftpb::ConfChange force;
  force.set_type(raftpb::CONF_FORCE_NEW_CLUSTER);
  auto* self = force.add_initial_voters();
  self->set_id(1);
  self->set_address("n1");
  raftpb::Entry e;
  e.set_index(old.last_index() + 1);
  e.set_term(old.term());
  e.set_type(raftpb::ENTRY_CONF_CHANGE);
  e.set_data(force.SerializeAsString());
  log.push_back(e);
  raftpb::HardState hs;
  hs.set_term(old.term());
  hs.set_commit(e.index());
  Config cfg;
  cfg.id = 1;
  cfg.group_id = 1;
  auto restarted = std::make_unique<Raft>(cfg);
  restarted->Restore(hs, raftpb::SnapshotMeta(), log, old.handed_out());
  c.nodes[1] = std::move(restarted);
  c.Tick(40);
  EXPECT_EQ(c[1].role(), Role::kLeader);
  EXPECT_TRUE(c[1].IsVoter(1));
  EXPECT_FALSE(c[1].IsMember(2));
  EXPECT_FALSE(c[1].IsMember(3));
  auto p = c[1].Propose("after");
  ASSERT_TRUE(p.ok());
  c.Pump();
  EXPECT_GE(c[1].commit(), p->first);
}

TEST(RaftTest, ACommittedMembershipChangeThatDoesNotDecodeIsReported) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  ASSERT_NE(leader, 0u);
  uint64_t follower = leader % 3 + 1;
  // What a damaged log or a misbehaving member could carry: a conf-change entry of garbage.
  raftpb::Message m;
  m.set_type(raftpb::MSG_APPEND);
  m.set_group_id(1);
  m.set_from(leader);
  m.set_to(follower);
  m.set_term(c[leader].term());
  m.set_log_term(c[follower].log().last_term());
  m.set_index(c[follower].last_index());
  m.set_commit(c[follower].last_index() + 1);
  auto* e = m.add_entries();
  e->set_term(c[leader].term());
  e->set_index(c[follower].last_index() + 1);
  e->set_type(raftpb::ENTRY_CONF_CHANGE);
  e->set_data("\xff\xff not a conf change");
  EXPECT_EQ(c[follower].malformed_conf_change(), 0u);
  c[follower].Step(m);
  while (c[follower].HasReady()) c[follower].Advance(c[follower].GetReady());
  EXPECT_EQ(c[follower].malformed_conf_change(), e->index());
}

TEST(RaftTest, RemovedLeaderStepsDownAndTheRestElectANewOne) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  raftpb::ConfChange cc;
  cc.set_type(raftpb::CONF_REMOVE_NODE);
  cc.set_node_id(leader);
  ASSERT_TRUE(c[leader].ProposeConfChange(cc).ok());
  c.Pump();
  c.Tick(60);
  EXPECT_NE(c[leader].role(), Role::kLeader);
  uint64_t new_leader = c.Leader();
  ASSERT_NE(new_leader, 0u);
  EXPECT_NE(new_leader, leader);
  EXPECT_FALSE(c[new_leader].IsMember(leader));
}

TEST(RaftTest, CompactedFollowerIsAskedForASnapshot) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  uint64_t slow = leader % 3 + 1;
  c.isolated = {slow};
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c[leader].Propose("p").ok());
  c.Pump();
  c.Tick(2);
  ASSERT_TRUE(c[leader].Compact(c[leader].commit()).has_value());
  c.isolated.clear();
  c.Tick(3);
  ASSERT_FALSE(c.snapshot_requests[leader].empty());
  EXPECT_EQ(c.snapshot_requests[leader][0], slow);
}

TEST(RaftTest, SingleNodeCommitsOnceDurable) {
  Cluster c(1);
  c.Tick(30);
  ASSERT_EQ(c.Leader(), 1u);
  auto r = c[1].Propose("solo");
  ASSERT_TRUE(r.ok());
  Ready rd = c[1].GetReady();
  EXPECT_TRUE(rd.committed.empty()) << "not committed before its own log is persisted";
  c[1].Advance(rd);
  EXPECT_EQ(c[1].commit(), r->first);
  EXPECT_TRUE(c[1].HasLease());
}

// Elects a leader in `c` and lets the idle group go quiet; returns the leader.
uint64_t ElectAndQuiesce(Cluster& c) {
  c.Tick(40);
  uint64_t leader = c.Leader();
  EXPECT_NE(leader, 0u);
  EXPECT_TRUE(leader != 0 && c[leader].Quiesce({}));
  c.Pump();
  return leader;
}

TEST(RaftTest, IdleGroupGoesQuietAndSendsNothingWhileQuiet) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  ASSERT_NE(leader, 0u);
  ASSERT_TRUE(c[leader].HasLease());
  ASSERT_TRUE(c[leader].Quiesce({}));
  c.Pump();
  for (auto& [id, r] : c.nodes) EXPECT_TRUE(r->quiesced()) << "node " << id;
  EXPECT_FALSE(c[leader].HasLease()) << "a quiet leader holds no lease";
  for (const auto& p : c[leader].Peers()) {
    EXPECT_TRUE(p.recent_active) << "caught-up followers stay active in a quiet leader's status";
  }
  size_t before = c.sent.size();
  c.Tick(100);  // ten election timeouts: nobody heartbeats, nobody campaigns
  EXPECT_EQ(c.sent.size(), before);
  EXPECT_EQ(c.Leader(), leader);
}

TEST(RaftTest, QuiesceRefusedWhileAFollowerLagsUnlessItsNodeIsUnreachable) {
  Cluster c(3);
  c.Tick(40);
  uint64_t leader = c.Leader();
  uint64_t lagging = leader == 3 ? 2 : 3;
  c.isolated = {lagging};
  ASSERT_TRUE(c[leader].Propose("x").ok());
  c.Pump();
  EXPECT_FALSE(c[leader].Quiesce({})) << "a follower is missing an entry";
  EXPECT_FALSE(c[leader].quiesced());
  EXPECT_TRUE(c[leader].Quiesce({lagging})) << "its node is unreachable; a quorum is caught up";
  // With two of three unreachable there is no caught-up quorum.
  Cluster d(3);
  d.Tick(40);
  uint64_t l2 = d.Leader();
  d.isolated = {l2 == 1 ? 2u : 1u, l2 == 3 ? 2u : 3u};
  ASSERT_TRUE(d[l2].Propose("y").ok());
  d.Pump();
  EXPECT_FALSE(d[l2].Quiesce({l2 == 1 ? 2u : 1u, l2 == 3 ? 2u : 3u}));
}

TEST(RaftTest, QuietGroupWakesOnProposalAndOnAFollowersRead) {
  Cluster c(3);
  uint64_t leader = ElectAndQuiesce(c);
  uint64_t follower = leader == 1 ? 2 : 1;
  ASSERT_TRUE(c[follower].quiesced());
  ASSERT_TRUE(c[leader].Propose("after-sleep").ok());
  c.Pump();
  for (auto& [id, r] : c.nodes) EXPECT_FALSE(r->quiesced()) << "node " << id;
  EXPECT_EQ(c.committed[follower].back().data(), "after-sleep");

  c.Tick(3);
  ASSERT_TRUE(c[leader].Quiesce({}));
  c.Pump();
  ASSERT_TRUE(c[follower].quiesced());
  c[follower].ReadIndex(42);
  c.Pump();
  c.Tick(1);
  EXPECT_FALSE(c[leader].quiesced()) << "the follower's read wakes the leader";
  ASSERT_FALSE(c.read_states[follower].empty());
  EXPECT_EQ(c.read_states[follower].back().request_id, 42u);
}

TEST(RaftTest, WokenFollowerWakesItsLeaderAndLostLeaderIsReplaced) {
  Cluster c(3);
  uint64_t leader = ElectAndQuiesce(c);
  uint64_t follower = leader == 1 ? 2 : 1;
  // The follower's driver saw the leader's node lapse (here: a false alarm); the wake-up goes to
  // the leader, which heartbeats again and keeps its leadership.
  c[follower].Unquiesce();
  c.Pump();
  EXPECT_FALSE(c[leader].quiesced());
  c.Tick(30);
  EXPECT_EQ(c.Leader(), leader);
  // Now the leader really is gone while everyone is quiet: once woken, the others elect.
  c.Tick(3);
  ASSERT_TRUE(c[leader].Quiesce({}));
  c.Pump();
  c.isolated = {leader};
  for (auto& [id, r] : c.nodes) {
    if (id != leader) r->Unquiesce();
  }
  for (int i = 0; i < 60; ++i) {
    for (auto& [id, r] : c.nodes) {
      if (id != leader) r->Tick();
    }
    c.Pump();
  }
  uint64_t term = c[leader].term();
  uint64_t new_leader = 0;
  for (auto& [id, r] : c.nodes) {
    if (id != leader && r->role() == Role::kLeader) new_leader = id;
  }
  EXPECT_NE(new_leader, 0u);
  EXPECT_GT(c[new_leader].term(), term);
  EXPECT_FALSE(c[leader].HasLease()) << "the old, quiet leader must not serve lease reads";
}

}  // namespace
}  // namespace kv::raft
