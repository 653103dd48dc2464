// Quorum counting and membership changes: table-driven tests of the pure functions
// (raft/quorum.h, raft/confchange.h), then joint consensus in scripted clusters, including a
// leader that crashes at every step of a change.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>

#include "raft/confchange.h"
#include "raft/quorum.h"
#include "tests/raft/scripted_cluster.h"

namespace kv::raft {
namespace {

using testing::Cluster;

TEST(QuorumTest, MajorityQuorumIndexIsTheMajorityThLargest) {
  struct Case {
    std::set<uint64_t> voters;
    std::map<uint64_t, uint64_t> acked;
    uint64_t want;
  };
  const Case cases[] = {
      {{1}, {{1, 7}}, 7},
      {{1, 2, 3}, {{1, 5}, {2, 3}, {3, 9}}, 5},
      {{1, 2, 3}, {{1, 5}}, 0},  // one of three
      {{1, 2, 3, 4}, {{1, 5}, {2, 5}, {3, 1}, {4, 9}}, 5},
      {{1, 2, 3, 4}, {{1, 5}, {2, 1}, {3, 1}, {4, 9}}, 1},
      {{1, 2, 3, 4, 5}, {{1, 10}, {2, 9}, {3, 8}, {4, 1}, {5, 0}}, 8},
  };
  for (const auto& c : cases) {
    MajorityConfig m(c.voters);
    auto acked = [&](uint64_t id) {
      auto it = c.acked.find(id);
      return it == c.acked.end() ? uint64_t{0} : it->second;
    };
    EXPECT_EQ(m.QuorumIndex(acked), c.want) << c.voters.size() << " voters";
  }
}

TEST(QuorumTest, VotesWinLoseOrWait) {
  struct Case {
    std::set<uint64_t> voters;
    std::map<uint64_t, bool> votes;
    VoteResult want;
  };
  const Case cases[] = {
      {{1}, {{1, true}}, VoteResult::kWon},
      {{1, 2, 3}, {{1, true}}, VoteResult::kPending},
      {{1, 2, 3}, {{1, true}, {2, true}}, VoteResult::kWon},
      {{1, 2, 3}, {{1, true}, {2, false}}, VoteResult::kPending},
      {{1, 2, 3}, {{1, true}, {2, false}, {3, false}}, VoteResult::kLost},
      {{1, 2, 3, 4}, {{1, true}, {2, true}}, VoteResult::kPending},  // 2 of 4 is no majority
      {{1, 2, 3, 4}, {{1, false}, {2, false}}, VoteResult::kLost},
  };
  for (const auto& c : cases) {
    auto vote = [&](uint64_t id) -> std::optional<bool> {
      auto it = c.votes.find(id);
      if (it == c.votes.end()) return std::nullopt;
      return it->second;
    };
    EXPECT_EQ(MajorityConfig(c.voters).Vote(vote), c.want);
  }
}

TEST(QuorumTest, AJointConfigurationNeedsBothMajorities) {
  QuorumConfig joint(MajorityConfig({1, 4, 5}), MajorityConfig({1, 2, 3}));
  EXPECT_TRUE(joint.joint());
  auto acked_by = [](std::map<uint64_t, uint64_t> acked) {
    return [acked](uint64_t id) {
      auto it = acked.find(id);
      return it == acked.end() ? uint64_t{0} : it->second;
    };
  };
  // The outgoing majority {1,2} alone, and the incoming majority {1,4} alone, commit nothing.
  EXPECT_EQ(joint.QuorumIndex(acked_by({{1, 9}, {2, 9}})), 0u);
  EXPECT_EQ(joint.QuorumIndex(acked_by({{1, 9}, {4, 9}})), 0u);
  EXPECT_EQ(joint.QuorumIndex(acked_by({{1, 9}, {2, 7}, {4, 8}})), 7u);
  auto votes = [](std::set<uint64_t> yes, std::set<uint64_t> no) {
    return [yes, no](uint64_t id) -> std::optional<bool> {
      if (yes.contains(id)) return true;
      if (no.contains(id)) return false;
      return std::nullopt;
    };
  };
  EXPECT_EQ(joint.Vote(votes({1, 2}, {})), VoteResult::kPending);
  EXPECT_EQ(joint.Vote(votes({1, 2, 4}, {})), VoteResult::kWon);
  EXPECT_EQ(joint.Vote(votes({1, 2}, {4, 5})), VoteResult::kLost);
  EXPECT_TRUE(joint.HasQuorum([](uint64_t id) { return id == 1 || id == 3 || id == 5; }));
  EXPECT_FALSE(joint.HasQuorum([](uint64_t id) { return id == 2 || id == 3 || id == 4; }));
  EXPECT_EQ(joint.Voters(), (std::set<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_FALSE(joint.OnlyVoterIs(1));
  EXPECT_TRUE(QuorumConfig(MajorityConfig({1}), MajorityConfig()).OnlyVoterIs(1));
}

raftpb::ConfState Conf(std::set<uint64_t> voters, std::set<uint64_t> learners = {},
                       std::set<uint64_t> outgoing = {}) {
  raftpb::ConfState c;
  auto add = [](auto* list, uint64_t id) {
    auto* m = list->Add();
    m->set_id(id);
    m->set_address("n" + std::to_string(id));
  };
  for (uint64_t id : voters) add(c.mutable_voters(), id);
  for (uint64_t id : learners) add(c.mutable_learners(), id);
  for (uint64_t id : outgoing) add(c.mutable_voters_outgoing(), id);
  return c;
}

raftpb::ConfChange Change(raftpb::ConfChangeType type, uint64_t node = 0,
                          std::set<uint64_t> voters = {}) {
  raftpb::ConfChange cc;
  cc.set_type(type);
  cc.set_node_id(node);
  if (type == raftpb::CONF_ADD_LEARNER) cc.set_address("n" + std::to_string(node));
  for (uint64_t id : voters) cc.add_voters()->set_id(id);
  return cc;
}

std::set<uint64_t> Ids(const google::protobuf::RepeatedPtrField<raftpb::Member>& members) {
  std::set<uint64_t> ids;
  for (const auto& m : members) ids.insert(m.id());
  return ids;
}

TEST(ConfChangeTest, ChecksRefuseWhatCannotBeApplied) {
  struct Case {
    const char* what;
    raftpb::ConfState conf;
    raftpb::ConfChange cc;
    absl::StatusCode want;
  };
  const Case cases[] = {
      {"add a learner", Conf({1, 2, 3}), Change(raftpb::CONF_ADD_LEARNER, 4),
       absl::StatusCode::kOk},
      {"add a member again", Conf({1, 2, 3}), Change(raftpb::CONF_ADD_LEARNER, 2),
       absl::StatusCode::kAlreadyExists},
      {"add node 0", Conf({1}), Change(raftpb::CONF_ADD_LEARNER, 0),
       absl::StatusCode::kInvalidArgument},
      {"promote a voter", Conf({1, 2}), Change(raftpb::CONF_PROMOTE_LEARNER, 2),
       absl::StatusCode::kFailedPrecondition},
      {"remove a stranger", Conf({1, 2}), Change(raftpb::CONF_REMOVE_NODE, 9),
       absl::StatusCode::kNotFound},
      {"remove the last voter", Conf({1}, {2}), Change(raftpb::CONF_REMOVE_NODE, 1),
       absl::StatusCode::kFailedPrecondition},
      {"enter joint", Conf({1, 2, 3}, {4, 5}), Change(raftpb::CONF_ENTER_JOINT, 0, {1, 4, 5}),
       absl::StatusCode::kOk},
      {"enter joint with a stranger", Conf({1, 2, 3}),
       Change(raftpb::CONF_ENTER_JOINT, 0, {1, 2, 9}), absl::StatusCode::kFailedPrecondition},
      {"enter joint with no voters", Conf({1, 2, 3}), Change(raftpb::CONF_ENTER_JOINT),
       absl::StatusCode::kInvalidArgument},
      {"enter joint to the same voters", Conf({1, 2, 3}),
       Change(raftpb::CONF_ENTER_JOINT, 0, {1, 2, 3}), absl::StatusCode::kAlreadyExists},
      {"enter joint twice", Conf({1, 4, 5}, {}, {1, 2, 3}),
       Change(raftpb::CONF_ENTER_JOINT, 0, {1, 2}), absl::StatusCode::kUnavailable},
      {"any other change while joint", Conf({1, 4, 5}, {}, {1, 2, 3}),
       Change(raftpb::CONF_ADD_LEARNER, 6), absl::StatusCode::kUnavailable},
      {"leave joint", Conf({1, 4, 5}, {}, {1, 2, 3}), Change(raftpb::CONF_LEAVE_JOINT),
       absl::StatusCode::kOk},
      {"leave when not joint", Conf({1, 2, 3}), Change(raftpb::CONF_LEAVE_JOINT),
       absl::StatusCode::kFailedPrecondition},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(CheckConfChange(c.conf, c.cc).code(), c.want) << c.what;
    if (c.want != absl::StatusCode::kOk) {
      EXPECT_EQ(ApplyConfChange(c.conf, c.cc).SerializeAsString(), c.conf.SerializeAsString())
          << c.what << ": a refused change applies as a no-op";
    }
  }
}

TEST(ConfChangeTest, AJointChangeMovesVotersInTwoSteps) {
  raftpb::ConfState start = Conf({1, 2, 3}, {4, 5});
  raftpb::ConfState joint = ApplyConfChange(start, Change(raftpb::CONF_ENTER_JOINT, 0, {1, 4, 5}));
  EXPECT_EQ(Ids(joint.voters()), (std::set<uint64_t>{1, 4, 5}));
  EXPECT_EQ(Ids(joint.voters_outgoing()), (std::set<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(joint.learners().empty()) << "promoted learners are voters now";
  EXPECT_TRUE(IsVoterIn(joint, 2)) << "outgoing voters still vote";
  EXPECT_EQ(MembersOf(joint).size(), 5u);
  for (const raftpb::Member* m : MembersOf(joint)) {
    EXPECT_EQ(m->address(), "n" + std::to_string(m->id())) << "addresses are kept";
  }
  raftpb::ConfState done = ApplyConfChange(joint, Change(raftpb::CONF_LEAVE_JOINT));
  EXPECT_EQ(Ids(done.voters()), (std::set<uint64_t>{1, 4, 5}));
  EXPECT_TRUE(done.voters_outgoing().empty());
  EXPECT_FALSE(IsMemberOf(done, 2));
  EXPECT_FALSE(IsMemberOf(done, 3));
}

// A cluster of voters 1-3 with 4 and 5 as caught-up learners; node 1 leads.
Cluster FiveWithTwoLearners() {
  Cluster c(3);
  c.Elect(1);
  for (uint64_t id : {4, 5}) {
    Config cfg;
    cfg.id = id;
    cfg.group_id = 1;
    c.nodes[id] = std::make_unique<Raft>(cfg);
    raftpb::ConfChange add = Change(raftpb::CONF_ADD_LEARNER, id);
    EXPECT_TRUE(c[1].ProposeConfChange(add).ok());
    c.Pump();
    c.Tick(2);
  }
  EXPECT_TRUE(c[1].IsMember(4) && c[1].IsMember(5));
  return c;
}

raftpb::ConfChange MoveTo145() { return Change(raftpb::CONF_ENTER_JOINT, 0, {1, 4, 5}); }

TEST(JointConsensusTest, ReplacesTwoVotersInOneChangeAndLeavesOnItsOwn) {
  Cluster c = FiveWithTwoLearners();
  ASSERT_TRUE(c[1].ProposeConfChange(MoveTo145()).ok());
  c.Pump();
  EXPECT_EQ(c[1].conf().voters_outgoing_size(), 3) << "joint once the change committed";
  EXPECT_EQ(c[1].ProposeConfChange(Change(raftpb::CONF_ADD_LEARNER, 6)).status().code(),
            absl::StatusCode::kUnavailable);
  c.Tick(3);  // the leader leaves the joint configuration by itself
  for (uint64_t id : {1, 4, 5}) {
    EXPECT_EQ(Ids(c[id].conf().voters()), (std::set<uint64_t>{1, 4, 5})) << id;
    EXPECT_TRUE(c[id].conf().voters_outgoing().empty()) << id;
  }
  EXPECT_FALSE(c[1].IsMember(2));
  // The new voters commit without the old ones.
  c.isolated = {2, 3};
  auto p = c[1].Propose("after");
  ASSERT_TRUE(p.ok());
  c.Pump();
  EXPECT_GE(c[1].commit(), p->first);
}

TEST(JointConsensusTest, WhileJointNeitherMajorityAloneCommits) {
  for (std::set<uint64_t> cut : {std::set<uint64_t>{4, 5}, std::set<uint64_t>{2, 3}}) {
    Cluster c = FiveWithTwoLearners();
    ASSERT_TRUE(c[1].ProposeConfChange(MoveTo145()).ok());
    c.Pump();  // committed and applied: joint; no tick yet, so the leave is not proposed
    ASSERT_EQ(c[1].conf().voters_outgoing_size(), 3);
    c.isolated = cut;
    auto p = c[1].Propose("needs both");
    ASSERT_TRUE(p.ok());
    c.Pump();
    EXPECT_LT(c[1].commit(), p->first)
        << "committed without nodes " << *cut.begin() << ", " << *cut.rbegin();
    c.isolated.clear();
    c.Tick(1);
    EXPECT_GE(c[1].commit(), p->first);
  }
}

TEST(JointConsensusTest, TheLeaderMustBeAmongTheIncomingVoters) {
  Cluster c = FiveWithTwoLearners();
  auto away = c[1].ProposeConfChange(Change(raftpb::CONF_ENTER_JOINT, 0, {2, 4, 5}));
  EXPECT_EQ(away.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(away.status().message().find("transfer leadership"), absl::string_view::npos);
}

// The leader crashes (is cut off for good) at each step of a change: right after proposing it,
// with it replicated but not committed, once the joint configuration committed, and with the
// leave proposed. The others finish or roll back the change and keep committing, and every
// survivor ends in the same, non-joint configuration: the old voters or the new ones.
TEST(JointConsensusTest, ALeaderCrashAtEveryStepLeavesAStateTheNextLeaderCompletes) {
  enum Step { kProposed, kReplicated, kJoint, kLeaving };
  for (Step step : {kProposed, kReplicated, kJoint, kLeaving}) {
    SCOPED_TRACE(step);
    Cluster c = FiveWithTwoLearners();
    if (step == kProposed) {
      c.isolated = {1};  // nothing it sends arrives
      ASSERT_TRUE(c[1].ProposeConfChange(MoveTo145()).ok());
      c.Pump();
    } else if (step == kReplicated) {
      // Followers get the entry; their acknowledgements are lost, so it never commits on 1.
      c.drop = [](const raftpb::Message& m) { return m.type() == raftpb::MSG_APPEND_RESP; };
      ASSERT_TRUE(c[1].ProposeConfChange(MoveTo145()).ok());
      c.Pump();
      c.isolated = {1};
      c.drop = nullptr;
    } else {
      ASSERT_TRUE(c[1].ProposeConfChange(MoveTo145()).ok());
      c.Pump();
      ASSERT_EQ(c[1].conf().voters_outgoing_size(), 3);
      if (step == kLeaving) {
        c.drop = [](const raftpb::Message& m) { return m.type() == raftpb::MSG_APPEND_RESP; };
        c.Tick(1);  // proposes the leave; it reaches the others, its commit does not
        c.drop = nullptr;
      }
      c.isolated = {1};
    }
    c.Tick(200);
    uint64_t leader = 0;
    for (uint64_t id : {2, 3, 4, 5}) {
      if (c[id].role() == Role::kLeader) leader = id;
    }
    ASSERT_NE(leader, 0u) << "no new leader";
    auto p = c[leader].Propose("after the crash");
    ASSERT_TRUE(p.ok()) << p.status();
    c.Tick(5);
    const auto& final_conf = c[leader].conf();
    EXPECT_TRUE(final_conf.voters_outgoing().empty()) << "a joint configuration was left behind";
    std::set<uint64_t> voters = Ids(final_conf.voters());
    EXPECT_TRUE(voters == (std::set<uint64_t>{1, 2, 3}) || voters == (std::set<uint64_t>{1, 4, 5}));
    if (step == kJoint || step == kLeaving) {
      EXPECT_EQ(voters, (std::set<uint64_t>{1, 4, 5})) << "a committed change is completed";
    }
    for (uint64_t id : {2, 3, 4, 5}) {
      if (!c[leader].IsMember(id)) continue;
      EXPECT_GE(c[id].commit(), p->first) << "node " << id << " did not commit after the crash";
      EXPECT_EQ(Ids(c[id].conf().voters()), voters) << "node " << id;
    }
    // The old leader comes back and follows.
    c.isolated.clear();
    c.Tick(20);
    EXPECT_NE(c[1].role(), Role::kLeader);
    if (c[leader].IsMember(1)) {
      EXPECT_GE(c[1].commit(), p->first);
    }
  }
}

}  // namespace
}  // namespace kv::raft
