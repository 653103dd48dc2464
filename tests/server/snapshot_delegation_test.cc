// Delegated snapshots (server/snapshot_delegation.h): who streams a snapshot, the leader's
// bookkeeping, and three scripted nodes with real drivers and RocksDB directories where a
// follower that fell behind the leader's compacted log is caught up:
//   - by the other follower, in its zone, streaming in the leader's name;
//   - by the leader itself once the delegate stays silent past the timeout;
// and where requests and streams no leader sent are refused.
#include "server/snapshot_delegation.h"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/server/scripted_nodes.h"

namespace kv::server {
namespace {

raft::PeerStatus Peer(uint64_t id, uint64_t applied, bool active = true) {
  raft::PeerStatus p;
  p.id = id;
  p.applied = applied;
  p.match = applied;
  p.recent_active = active;
  return p;
}

TEST(ChooseSnapshotSender, PicksACaughtUpReplicaCloserThanTheLeader) {
  const std::map<uint64_t, NodeLocality> labels = {{1, {"eu", "a"}}, {2, {"eu", "a"}},
                                                   {3, {"us", "b"}}, {4, {"us", "c"}},
                                                   {5, {"us", "b"}}, {6, {"us", "c"}}};
  auto where = [&](uint64_t node) {
    auto it = labels.find(node);
    return it == labels.end() ? NodeLocality{} : it->second;
  };
  struct Case {
    const char* what;
    uint64_t leader, target, min_index;
    std::vector<raft::PeerStatus> peers;
    bool labelled;
    uint64_t want;
  };
  const std::vector<Case> cases = {
      {"unlabelled: the leader sends", 1, 3, 50, {Peer(2, 100), Peer(3, 0)}, false, 0},
      {"a follower in the target's zone", 1, 3, 50, {Peer(2, 100), Peer(5, 60)}, true, 5},
      {"not applied far enough", 1, 3, 50, {Peer(5, 40), Peer(3, 0)}, true, 0},
      {"not heard from lately", 1, 3, 50, {Peer(5, 100, false), Peer(3, 0)}, true, 0},
      {"the target never sends to itself", 1, 3, 0, {Peer(3, 500)}, true, 0},
      {"closer region wins over the leader's", 1, 3, 50, {Peer(2, 100), Peer(4, 90)}, true, 4},
      {"same zone wins over same region", 1, 3, 50, {Peer(4, 100), Peer(5, 60)}, true, 5},
      {"farther than the leader: the leader sends", 5, 3, 0, {Peer(2, 100), Peer(4, 90)}, true, 0},
      {"only as close as the leader: the leader sends", 4, 3, 0, {Peer(6, 9)}, true, 0},
      {"equally close: furthest applied", 2, 4, 0, {Peer(3, 10), Peer(5, 30)}, true, 5},
      {"equally close and applied: lowest id", 2, 4, 0, {Peer(3, 30), Peer(5, 30)}, true, 3},
  };
  for (const auto& c : cases) {
    std::function<NodeLocality(uint64_t)> locality;
    if (c.labelled) locality = where;
    EXPECT_EQ(ChooseSnapshotSender(c.leader, c.target, c.min_index, c.peers, locality), c.want)
        << c.what;
  }
}

TEST(SnapshotDelegations, TracksEachDelegationUntilItsReportOrDeadline) {
  SnapshotDelegations d;
  absl::Time t0 = absl::UnixEpoch();
  d.Started(7, 3, 2, t0 + absl::Seconds(60));
  EXPECT_FALSE(d.Finished(7, 3, 4, true)) << "a report from another node changes nothing";
  EXPECT_FALSE(d.Finished(8, 3, 2, true)) << "nor one for another group";
  EXPECT_TRUE(d.Finished(7, 3, 2, true));
  EXPECT_FALSE(d.Finished(7, 3, 2, true)) << "reported once";
  EXPECT_FALSE(d.TakeFallback(7, 3)) << "a success leaves the next one delegated too";

  d.Started(7, 3, 2, t0 + absl::Seconds(60));
  EXPECT_TRUE(d.Finished(7, 3, 2, false));
  EXPECT_TRUE(d.TakeFallback(7, 3)) << "after a failure the leader sends the next one";
  EXPECT_FALSE(d.TakeFallback(7, 3)) << "only the next one";

  d.Started(7, 3, 2, t0 + absl::Seconds(60));
  d.Started(7, 5, 2, t0 + absl::Seconds(90));
  d.Started(9, 3, 4, t0 + absl::Seconds(10));
  EXPECT_TRUE(d.TakeExpired(t0 + absl::Seconds(9)).empty());
  EXPECT_EQ(d.TakeExpired(t0 + absl::Seconds(60)),
            (std::vector<SnapshotDelegations::Key>{{7, 3}, {9, 3}}));
  EXPECT_TRUE(d.TakeFallback(9, 3)) << "an expired delegation counts as failed";
  EXPECT_FALSE(d.Finished(7, 3, 2, true)) << "a report after its deadline is stale";
  EXPECT_EQ(d.outstanding(), 1u);
  d.Cancel(7, 5);
  EXPECT_TRUE(d.empty());

  d.Started(7, 3, 2, t0 + absl::Seconds(1));
  d.Started(8, 3, 2, t0 + absl::Seconds(1));
  d.ForgetGroup(7);
  EXPECT_EQ(d.TakeExpired(t0 + absl::Seconds(5)), (std::vector<SnapshotDelegations::Key>{{8, 3}}));
  EXPECT_FALSE(d.TakeFallback(7, 3));
}

constexpr uint64_t kKeyspace = 5;
constexpr uint64_t kGroup = 10;

// The scripted nodes' zones, set once the leader is known: the leader alone in its zone.
std::map<uint64_t, NodeLocality>& Zones() {
  static std::map<uint64_t, NodeLocality> zones;
  return zones;
}

class DelegatedSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nodes_.set_deliver_snapshots(true);
    nodes_.Run(3000);
    for (const auto& [id, d] : nodes_.drivers()) {
      d->CreateGroup(nodes_.Descriptor(kGroup, kKeyspace), {}, nullptr);
    }
    ASSERT_TRUE(nodes_.RunUntil([&] { return nodes_.Leader(kGroup) != 0; }, 5000));
    leader_ = nodes_.Leader(kGroup);
    Zones().clear();
    for (uint64_t id : {1, 2, 3}) Zones()[id] = {"eu", id == leader_ ? "a" : "b"};
    for (uint64_t id : {1, 2, 3}) {
      if (id == leader_) continue;
      (lagging_ == 0 ? lagging_ : delegate_) = id;
    }
    ASSERT_TRUE(Put("before", "v").ok());
    nodes_.Run(300);
  }

  absl::StatusOr<WriteOutcome> Put(const std::string& key, const std::string& value) {
    internal::Command cmd;
    cmd.mutable_put()->set_key(key);
    cmd.mutable_put()->set_value(value);
    std::optional<absl::StatusOr<WriteOutcome>> result;
    nodes_.node(leader_).Propose(kGroup, std::move(cmd), v1::WRITE_MAJORITY,
                                 nodes_.Now() + absl::Seconds(5),
                                 [&](absl::StatusOr<WriteOutcome> r) { result = std::move(r); });
    nodes_.RunUntil([&] { return result.has_value(); }, 6000);
    return result.value_or(absl::DeadlineExceededError("never answered"));
  }
  std::string ValueOn(uint64_t node, const std::string& key) {
    auto v = nodes_.node(node).StateMachineOf(kGroup)->Get(key);
    return v.ok() && v->has_value() ? (*v)->value : "";
  }
  // Cuts the lagging follower off while the others write and compact past what it has.
  void FallBehind() {
    nodes_.set_hold([this](const Sent& s) { return s.from == lagging_ || s.m.to() == lagging_; });
    for (int i = 0; i < 60; ++i) ASSERT_TRUE(Put(absl::StrCat("k", i), "w").ok());
    nodes_.Run(500);
    nodes_.DropQueued([this](const Sent& s) { return s.m.to() == lagging_; });
    ASSERT_GT(nodes_.node(leader_).Status(kGroup).first_index,
              nodes_.node(lagging_).Status(kGroup).last_index + 1)
        << "the leader's log must be compacted past what the lagging follower has";
  }
  bool CaughtUp() { return ValueOn(lagging_, "k59") == "w"; }

  using Sent = testing::ScriptedNodes::Sent;
  testing::ScriptedNodes nodes_{3, [](DriverOptions& d) {
                                  d.compact_threshold = 20;
                                  d.compact_retain = 5;
                                  d.delegated_snapshot_timeout = absl::Seconds(2);
                                  d.locality_of = [](uint64_t node) { return Zones()[node]; };
                                }};
  uint64_t leader_ = 0, lagging_ = 0, delegate_ = 0;
};

TEST_F(DelegatedSnapshotTest, ACaughtUpFollowerStreamsTheSnapshotInTheLeadersName) {
  FallBehind();
  std::vector<Sent> streams;
  nodes_.set_hold([&](const Sent& s) {
    if (s.snapshot_data) streams.push_back({s.from, s.m});
    return false;
  });
  ASSERT_TRUE(nodes_.RunUntil([&] { return CaughtUp(); }, 5000));
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_EQ(streams[0].from, delegate_) << "streamed by the other follower";
  EXPECT_EQ(streams[0].m.from(), leader_) << "in the leader's name";
  EXPECT_EQ(streams[0].m.to(), lagging_);
  EXPECT_EQ(nodes_.node(leader_).counters().snapshots_delegated, 1u);
  EXPECT_EQ(nodes_.node(leader_).counters().snapshots_sent, 0u);
  EXPECT_EQ(nodes_.node(delegate_).counters().snapshots_sent_for_leader, 1u);
  EXPECT_EQ(nodes_.node(lagging_).Status(kGroup).snapshots_installed, 1u);
  // The follower then replicates from the leader as usual.
  ASSERT_TRUE(Put("after", "x").ok());
  EXPECT_TRUE(nodes_.RunUntil([&] { return ValueOn(lagging_, "after") == "x"; }, 2000));
  EXPECT_EQ(nodes_.node(leader_).counters().snapshots_delegated, 1u) << "one snapshot was enough";
}

TEST_F(DelegatedSnapshotTest, TheLeaderStreamsItselfWhenItsDelegateStaysSilent) {
  FallBehind();
  // The delegate's stream and its report never arrive, as if its node stopped mid-stream.
  std::vector<uint64_t> stream_senders;
  nodes_.set_hold([&](const Sent& s) {
    bool lost =
        s.from == delegate_ && (s.snapshot_data || s.m.type() == raftpb::MSG_SNAPSHOT_STATUS);
    if (s.snapshot_data && !lost) stream_senders.push_back(s.from);
    return lost;
  });
  absl::Time began = nodes_.Now();
  ASSERT_TRUE(nodes_.RunUntil([&] { return CaughtUp(); }, 6000));
  EXPECT_GE(nodes_.Now() - began, absl::Seconds(2)) << "not before the timeout";
  EXPECT_EQ(stream_senders, std::vector<uint64_t>{leader_});
  EXPECT_EQ(nodes_.node(leader_).counters().snapshots_delegated, 1u);
  EXPECT_EQ(nodes_.node(leader_).counters().snapshots_sent, 1u);
}

TEST_F(DelegatedSnapshotTest, ARequestOrAStreamNoLeaderSentIsRefused) {
  const uint64_t term = nodes_.node(lagging_).Status(kGroup).term;
  std::vector<Sent> out;
  nodes_.set_hold([&](const Sent& s) {
    if (s.m.group_id() == kGroup) out.push_back({s.from, s.m});
    return false;
  });
  // A follower asks the other to stream a snapshot: only the leader of the term may.
  raftpb::Message ask;
  ask.set_type(raftpb::MSG_SNAPSHOT_DELEGATE);
  ask.set_group_id(kGroup);
  ask.set_from(delegate_);
  ask.set_to(lagging_);
  ask.set_term(term);
  ask.set_snapshot_to(leader_);
  nodes_.node(lagging_).Deliver(delegate_, true, "", {ask});
  // A stale leader's request is refused the same way.
  ask.set_from(leader_);
  ask.set_term(term - 1);
  nodes_.node(lagging_).Deliver(leader_, true, "", {ask});
  nodes_.Run(50);
  int refusals = 0;
  for (const auto& s : out) {
    EXPECT_FALSE(s.snapshot_data) << "no stream may start";
    if (s.from == lagging_ && s.m.type() == raftpb::MSG_SNAPSHOT_STATUS) {
      EXPECT_TRUE(s.m.reject());
      ++refusals;
    }
  }
  EXPECT_EQ(refusals, 2);
  EXPECT_EQ(nodes_.node(lagging_).counters().snapshots_sent_for_leader, 0u);

  // A member streams a snapshot in the name of a node that is no member: refused before Raft
  // sees it (Raft would have taken its newer term).
  raftpb::Message m;
  m.set_type(raftpb::MSG_SNAPSHOT);
  m.set_group_id(kGroup);
  m.set_from(99);
  m.set_to(lagging_);
  m.set_term(term + 5);
  std::string data;
  ASSERT_TRUE(nodes_.node(delegate_)
                  .StateMachineOf(kGroup)
                  ->BuildSnapshot(m.mutable_snapshot(), &data)
                  .ok());
  m.mutable_snapshot()->set_index(m.snapshot().index() + 1000);
  auto sink = nodes_.node(lagging_).OpenSnapshotSink(kGroup, delegate_);
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Append(data).ok());
  auto complete = (*sink)->Finish();
  ASSERT_TRUE(complete.ok()) << complete.status();
  nodes_.node(lagging_).DeliverSnapshot(delegate_, true, m, *std::move(complete));
  nodes_.Run(50);
  EXPECT_EQ(nodes_.node(lagging_).Status(kGroup).term, term);
  EXPECT_EQ(nodes_.node(lagging_).Status(kGroup).snapshots_installed, 0u);
}

}  // namespace
}  // namespace kv::server
