// The Store on a real RocksDB directory: replicas created from a descriptor (bootstrapped, empty,
// from a split index), reopened from their records, and destroyed in one batch that leaves a
// tombstone. Also the node liveness rules the driver wakes quiet groups by.
#include "server/store.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "server/metadata.h"
#include "server/node_liveness.h"
#include "storage/keys.h"
#include "tests/support/kvd_process.h"

namespace kv::server {
namespace {

internal::GroupDescriptor Descriptor(uint64_t id, std::vector<uint64_t> voters) {
  internal::GroupDescriptor d;
  d.set_format(1);
  d.set_group_id(id);
  d.set_shard_id(id);
  for (uint64_t v : voters) d.add_voters(v);
  d.mutable_epoch()->set_generation(1);
  d.mutable_epoch()->set_conf_version(1);
  return d;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kv::testing::MakeTempDir("store");
    options_.node_id = 1;
    options_.peer_address = "127.0.0.1:7301";
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    engine_.reset();
    engine_ = *storage::Engine::Open(storage::EngineOptions{dir_});
    store_ = std::make_unique<Store>(
        engine_.get(), &options_,
        [this](const internal::GroupDescriptor& d) {
          return std::make_unique<KvStateMachine>(engine_.get(), d.group_id(), ShardScope::Of(d));
        },
        [](uint64_t id) { return "node-" + std::to_string(id); });
    auto opened = store_->Open();
    ASSERT_TRUE(opened.ok()) << opened;
  }
  size_t KeysIn(storage::Column cf, const std::string& begin, const std::string& end) {
    size_t n = 0;
    for (auto it = engine_->NewIterator(cf, begin, end); it->Valid(); it->Next()) ++n;
    return n;
  }

  std::string dir_;
  DriverOptions options_;
  std::unique_ptr<storage::Engine> engine_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, BootstrappedReplicaHasTheDescriptorsVotersAndSurvivesAReopen) {
  auto r = store_->Create(Descriptor(7, {1, 2, 3}), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->raft().conf().voters_size(), 3);
  EXPECT_EQ((*r)->raft().AddressOf(2), "node-2");
  EXPECT_TRUE(absl::IsAlreadyExists(store_->Create(Descriptor(7, {1}), {}).status()));
  Reopen();
  GroupReplica* again = store_->Find(7);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->raft().conf().voters_size(), 3);
  EXPECT_EQ(again->descriptor().shard_id(), 7u);
}

TEST_F(StoreTest, EmptyReplicaWaitsForItsLeader) {
  ReplicaOrigin empty;
  empty.kind = ReplicaOrigin::Kind::kEmpty;
  auto r = store_->Create(Descriptor(8, {1, 2, 3}), empty);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->raft().conf().voters_size(), 0) << "membership arrives with the snapshot";
  EXPECT_EQ((*r)->raft().last_index(), 0u);
}

// Whether an empty replica of a split child grants a vote to a candidate that holds the split.
bool GrantsVoteToACandidateHoldingTheSplit(GroupReplica& r) {
  raftpb::Message vote;
  vote.set_group_id(r.id());
  vote.set_type(raftpb::MSG_VOTE);
  vote.set_from(2);
  vote.set_to(1);
  vote.set_term(r.raft().term() + 1);  // a new election, whatever this replica voted before
  vote.set_index(r.descriptor().split_index() + 5);
  vote.set_log_term(8);
  r.raft().Step(vote);
  raft::Ready rd = r.raft().GetReady();
  for (const auto& m : rd.messages) {
    if (m.type() == raftpb::MSG_VOTE_RESP) return !m.reject();
  }
  return false;
}

internal::GroupDescriptor SplitChild(uint64_t conf_version) {
  internal::GroupDescriptor d = Descriptor(9, {1, 2, 3});
  d.set_split_from(5);
  d.set_split_index(40);
  d.mutable_epoch()->set_conf_version(conf_version);
  return d;
}

TEST_F(StoreTest, AnEmptySplitChildVotesOnlyUnderItsFirstMembership) {
  ReplicaOrigin empty;
  empty.kind = ReplicaOrigin::Kind::kEmpty;
  // Made empty on contact before this node applied the split: it never held the child, so
  // its vote for a candidate holding the split is safe (and lets the child elect at once).
  auto first = store_->Create(SplitChild(/*conf_version=*/12), empty);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(GrantsVoteToACandidateHoldingTheSplit(**first));
  ASSERT_TRUE(store_->Destroy(9).ok());
  // Back under a later membership (a change in the child's own log, past the split index),
  // after this node held the group and left it: what it acknowledged then is gone, so it must
  // not vote while empty.
  auto back = store_->Create(SplitChild(/*conf_version=*/50), empty);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(GrantsVoteToACandidateHoldingTheSplit(**back));
  Reopen();
  ASSERT_NE(store_->Find(9), nullptr);
  EXPECT_FALSE(GrantsVoteToACandidateHoldingTheSplit(*store_->Find(9))) << "after a restart too";
}

TEST_F(StoreTest, SplitChildContinuesTheParentsLogAboveTheSplitIndex) {
  ReplicaOrigin split;
  split.kind = ReplicaOrigin::Kind::kSplit;
  split.index = 1234;
  split.term = 5;
  split.clock_ms = 99;
  auto r = store_->Create(Descriptor(9, {1, 2, 3}), split);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->raft().first_index(), 1235u);
  EXPECT_EQ((*r)->raft().commit(), 1234u);
  EXPECT_EQ((*r)->state_machine().applied_index(), 1234u);
  EXPECT_EQ((*r)->state_machine().applied_term(), 5u);
  ReplicaOrigin bad = split;
  bad.index = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Create(Descriptor(10, {1}), bad).status()));
  EXPECT_EQ(store_->Find(10), nullptr) << "a refused creation changes nothing";
}

TEST_F(StoreTest, ASplitAppliesInOneBatchAndBothHalvesKeepTheirSpansAcrossAReopen) {
  sharding::Keyspace ks;
  ks.id = 4;
  internal::GroupDescriptor d = Descriptor(20, {1});
  d.set_shard_id(0);
  d.set_keyspace_id(4);
  d.set_span_start(sharding::KeyspaceBegin(4));
  d.set_span_end(sharding::KeyspaceEnd(4));
  auto parent = store_->Create(d, {});
  ASSERT_TRUE(parent.ok()) << parent.status();
  KvStateMachine& sm = (*parent)->state_machine();
  uint64_t index = sm.applied_index();
  auto apply = [&](const internal::Command& c) {
    IndexedCommand ic{++index, 2, &c};
    auto r = sm.Apply({&ic, 1}, true);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? (*r)[0] : internal::CommandResult{};
  };
  internal::Command put;
  put.set_client_id(77);
  put.set_seq(1);
  put.mutable_put()->set_key("q");
  put.mutable_put()->set_value("right");
  apply(put);
  internal::Command split;
  split.mutable_split()->set_child_group_id(21);
  split.mutable_split()->set_split_key(sharding::EncodeKey(ks, "m"));
  split.mutable_split()->set_generation(2);  // stale: the shard is at generation 1
  EXPECT_FALSE(apply(split).succeeded());
  EXPECT_TRUE(store_->FinishSplits().empty()) << "a refused split changes nothing";
  split.mutable_split()->set_generation(1);
  uint64_t split_index = index + 1;
  EXPECT_TRUE(apply(split).succeeded());
  EXPECT_EQ(store_->FinishSplits(), std::vector<uint64_t>{21});
  EXPECT_EQ(sm.generation(), 2u);
  EXPECT_EQ(sm.Get("q").status().code(), absl::StatusCode::kOutOfRange);
  GroupReplica* child = store_->Find(21);
  ASSERT_NE(child, nullptr);
  EXPECT_EQ((*child->state_machine().Get("q"))->value, "right");
  EXPECT_EQ(child->state_machine().applied_index(), split_index);
  EXPECT_EQ(child->raft().first_index(), split_index + 1) << "versions keep growing";
  EXPECT_EQ(child->state_machine().session_count(), 1u) << "exactly-once records came along";
  EXPECT_EQ(store_->Find(20)->descriptor().span_end(), sharding::EncodeKey(ks, "m"));
  // Reopened from disk (from the descriptor they were first created with): each half's own
  // record gives its span and generation. (The whole store is not reopened: these commands
  // were applied without a Raft log behind them.)
  KvStateMachine left(engine_.get(), 20, ShardScope::Of(d)),
      right(engine_.get(), 21, ShardScope::Of(d));
  ASSERT_TRUE(left.Load().ok());
  ASSERT_TRUE(right.Load().ok());
  EXPECT_EQ(left.scope().span.end, sharding::EncodeKey(ks, "m"));
  EXPECT_EQ(right.scope().span.start, sharding::EncodeKey(ks, "m"));
  EXPECT_EQ(right.generation(), 2u);
  EXPECT_EQ((*right.Get("q"))->value, "right");
  EXPECT_EQ(left.Get("q").status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(StoreTest, DestroyDeletesEverythingOfTheGroupAndLeavesATombstone) {
  auto r = store_->Create(Descriptor(5, {1}), {});
  ASSERT_TRUE(r.ok());
  auto neighbour = store_->Create(Descriptor(6, {1}), {});
  ASSERT_TRUE(neighbour.ok());
  // Data of both groups, and Raft state, as a running group would have.
  storage::WriteBatch batch(*engine_);
  batch.Put(storage::Column::kData, storage::DataKey(5, "a"),
            storage::EncodeVersionedValue(3, "x"));
  batch.Put(storage::Column::kData, storage::DataKey(6, "a"),
            storage::EncodeVersionedValue(3, "y"));
  ASSERT_TRUE(engine_->Write(batch, true).ok());
  // The bootstrap's hard state and entries went from the raft column into the log engine.
  EXPECT_EQ(
      KeysIn(storage::Column::kRaft, storage::RaftEntryKey(5, 0), storage::RaftEntryKey(6, 0)), 0u);
  EXPECT_TRUE(engine_->Get(storage::Column::kRaft, storage::RaftSnapshotKey(5))->has_value());

  ASSERT_TRUE(store_->Destroy(5).ok());
  EXPECT_EQ(store_->Find(5), nullptr);
  EXPECT_EQ(KeysIn(storage::Column::kData, storage::ShardBegin(5), storage::ShardEnd(5)), 0u);
  EXPECT_EQ(
      KeysIn(storage::Column::kRaft, storage::RaftEntryKey(5, 0), storage::RaftEntryKey(6, 0)), 0u);
  EXPECT_FALSE(engine_->Get(storage::Column::kRaft, storage::RaftHardStateKey(5))->has_value());
  EXPECT_FALSE(engine_->Get(storage::Column::kMeta, storage::AppliedIndexKey(5))->has_value());
  EXPECT_EQ(KeysIn(storage::Column::kData, storage::ShardBegin(6), storage::ShardEnd(6)), 1u)
      << "the neighbouring group keeps its data";
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->Create(Descriptor(5, {1}), {}).status()))
      << "group ids are never reused";
  EXPECT_TRUE(absl::IsNotFound(store_->Destroy(5)));

  EXPECT_FALSE(engine_->Get(storage::Column::kRaft, storage::RaftSnapshotKey(5))->has_value());

  Reopen();
  EXPECT_EQ(store_->Find(5), nullptr);
  EXPECT_TRUE(store_->WasDestroyed(5));
  EXPECT_NE(store_->Find(6), nullptr);
  // The destroyed group's log records were leftovers, dropped when the store reopened: a third
  // opening replays nothing of group 5, and group 6's log is intact.
  store_.reset();
  engine_.reset();
  engine_ = *storage::Engine::Open(storage::EngineOptions{dir_});
  EXPECT_TRUE(engine_->raft_log().TakeRecovered(5).empty());
  EXPECT_FALSE(engine_->raft_log().TakeRecovered(6).empty());
}

TEST_F(StoreTest, FirstGroupsBootstrapFromTheInitialVotersOrWaitWithJoin) {
  options_.initial_voters = {{1, "127.0.0.1:7301"}, {2, "127.0.0.1:7302"}};
  auto r = store_->OpenOrBootstrap(1, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->raft().conf().voters_size(), 2);
  options_.join = true;
  auto joined = store_->OpenOrBootstrap(3, 3);
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ((*joined)->raft().conf().voters_size(), 0);
  Reopen();
  EXPECT_NE(store_->Find(1), nullptr);
  EXPECT_NE(store_->Find(3), nullptr);
}

TEST(NodeLivenessTest, ALapseAndAReturnAreEachReportedOnce) {
  absl::Time t0 = absl::FromUnixSeconds(1000);
  NodeLiveness live(absl::Seconds(1));
  live.Track(2, t0);
  live.Track(3, t0);
  EXPECT_TRUE(live.IsLive(2, t0 + absl::Milliseconds(900)));
  EXPECT_TRUE(live.TakeNewlyLapsed(t0 + absl::Milliseconds(900)).empty());
  live.Heard(3, t0 + absl::Milliseconds(900));
  EXPECT_EQ(live.TakeNewlyLapsed(t0 + absl::Milliseconds(1500)), std::vector<uint64_t>{2});
  EXPECT_TRUE(live.TakeNewlyLapsed(t0 + absl::Milliseconds(1600)).empty()) << "reported once";
  EXPECT_EQ(live.Unreachable({2, 3, 4}, t0 + absl::Milliseconds(1500)), (std::set<uint64_t>{2, 4}))
      << "never heard from counts as unreachable";
  EXPECT_TRUE(live.TakeReturned().empty());
  live.Heard(2, t0 + absl::Seconds(2));
  live.Heard(2, t0 + absl::Milliseconds(2100));
  live.Heard(3, t0 + absl::Milliseconds(2100));  // never lapsed: not a return
  EXPECT_TRUE(live.IsLive(2, t0 + absl::Seconds(2)));
  EXPECT_EQ(live.TakeReturned(), std::vector<uint64_t>{2}) << "a return is reported once";
  EXPECT_TRUE(live.TakeReturned().empty());
  EXPECT_EQ(live.TakeNewlyLapsed(t0 + absl::Seconds(4)), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(live.SinceHeard(4, t0), absl::InfiniteDuration());
}

TEST(MetadataTest, RecordsRoundTripAndNewerFormatsAreRefused) {
  EXPECT_EQ(NodeKey(12), "meta/node/00000000000000000012");
  EXPECT_EQ(IdOfKey(GroupKey(77), kGroupKeyPrefix), 77u);
  EXPECT_FALSE(IdOfKey("meta/group/x", kGroupKeyPrefix).has_value());
  EXPECT_FALSE(IdOfKey(NodeKey(1), kGroupKeyPrefix).has_value());
  internal::NodeRecord future;
  future.set_format(kMetadataFormat + 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(ParseNodeRecord(future.SerializeAsString()).status()));
  EXPECT_TRUE(absl::IsDataLoss(ParseGroupDescriptor("\xff\xff\xff").status()));

  ClusterMetadata md;
  std::vector<std::pair<uint64_t, bool>> seen;
  md.SetGroupObserver([&](uint64_t id, std::optional<internal::GroupDescriptor> d) {
    seen.emplace_back(id, d.has_value());
  });
  EXPECT_TRUE(md.OnSystemKey(GroupKey(4), Descriptor(4, {1, 2}).SerializeAsString()));
  EXPECT_TRUE(md.OnSystemKey(GroupKey(4), ""));
  EXPECT_FALSE(md.OnSystemKey("killswitch", "x")) << "settings are not metadata records";
  EXPECT_TRUE(md.OnSystemKey(GroupKey(1), "")) << "a record naming a first group is ignored";
  EXPECT_EQ(seen, (std::vector<std::pair<uint64_t, bool>>{{4, true}, {4, false}}));
  EXPECT_TRUE(md.Groups().empty());

  EXPECT_TRUE(ValidateNewGroup(Descriptor(0, {1, 2, 3})).ok());
  EXPECT_FALSE(ValidateNewGroup(Descriptor(0, {1, 1})).ok());
  EXPECT_FALSE(ValidateNewGroup(Descriptor(0, {})).ok());
  EXPECT_FALSE(ValidateNewGroup(Descriptor(0, {1, 2, 3, 4, 5, 6, 7, 8})).ok());
}

}  // namespace
}  // namespace kv::server

namespace kv::server {
namespace {

raftpb::Entry LogEntry(uint64_t index, uint64_t term) {
  raftpb::Entry e;
  e.set_index(index);
  e.set_term(term);
  return e;
}

PersistedRaftState StateWith(uint64_t snap_index, uint64_t snap_term,
                             std::vector<std::pair<uint64_t, uint64_t>> entries, uint64_t term,
                             uint64_t vote, uint64_t commit) {
  PersistedRaftState s;
  s.snapshot.set_index(snap_index);
  s.snapshot.set_term(snap_term);
  for (auto [i, t] : entries) s.entries.push_back(LogEntry(i, t));
  s.hard_state.set_term(term);
  s.hard_state.set_vote(vote);
  s.hard_state.set_commit(commit);
  return s;
}

std::vector<uint64_t> Indexes(const PersistedRaftState& s) {
  std::vector<uint64_t> v;
  for (const auto& e : s.entries) v.push_back(e.index());
  return v;
}

// The two stores after each crash window of a snapshot install or a compaction.
TEST(ReconcileWithSnapshotTest, Table) {
  struct Case {
    const char* what;
    PersistedRaftState in;
    std::vector<uint64_t> want_entries;
    uint64_t want_term, want_vote, want_commit;
  };
  std::vector<Case> cases = {
      {"consistent: entries right after the snapshot",
       StateWith(10, 2, {{11, 2}, {12, 3}}, 3, 2, 12),
       {11, 12},
       3,
       2,
       12},
      {"compaction point durable, log not yet trimmed: covered entries dropped",
       StateWith(10, 2, {{8, 2}, {9, 2}, {10, 2}, {11, 2}}, 2, 1, 11),
       {11},
       2,
       1,
       11},
      {"snapshot durable, old log kept: an entry matching it keeps what follows",
       StateWith(10, 2, {{9, 2}, {10, 2}, {11, 3}}, 3, 0, 9),
       {11},
       3,
       0,
       10},
      {"snapshot durable, old log conflicts at its index: all dropped",
       StateWith(10, 4, {{9, 2}, {10, 2}, {11, 2}}, 2, 3, 9),
       {},
       4,
       0,
       10},
      {"snapshot durable, old log shorter than it: all dropped, commit raised",
       StateWith(10, 4, {{5, 1}, {6, 1}}, 4, 4, 6),
       {},
       4,
       4,
       10},
      {"commit beyond the last entry is cut back to it",
       StateWith(0, 0, {{1, 1}, {2, 1}}, 1, 1, 7),
       {1, 2},
       1,
       1,
       2},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_TRUE(ReconcileWithSnapshot(1, &c.in).ok());
    EXPECT_EQ(Indexes(c.in), c.want_entries);
    EXPECT_EQ(c.in.hard_state.term(), c.want_term);
    EXPECT_EQ(c.in.hard_state.vote(), c.want_vote);
    EXPECT_EQ(c.in.hard_state.commit(), c.want_commit);
  }
  // A log starting past the entry after the snapshot has lost entries: refused.
  auto gap = StateWith(10, 2, {{12, 2}}, 2, 0, 10);
  EXPECT_TRUE(absl::IsDataLoss(ReconcileWithSnapshot(1, &gap)));
}

TEST(RaftLogStoreTest, ALogFromAnOlderKvdInTheRaftColumnMovesIntoTheLogEngine) {
  std::string dir = kv::testing::MakeTempDir("legacy-log");
  {
    auto engine = *storage::Engine::Open(storage::EngineOptions{dir});
    // As a kvd that kept its log in RocksDB left it: snapshot meta, hard state, entries.
    storage::WriteBatch b(*engine);
    raftpb::SnapshotMeta meta;
    meta.set_index(4);
    meta.set_term(1);
    b.Put(storage::Column::kRaft, storage::RaftSnapshotKey(9), meta.SerializeAsString());
    raftpb::HardState hs;
    hs.set_term(2);
    hs.set_vote(3);
    hs.set_commit(6);
    b.Put(storage::Column::kRaft, storage::RaftHardStateKey(9), hs.SerializeAsString());
    for (uint64_t i = 5; i <= 7; ++i) {
      b.Put(storage::Column::kRaft, storage::RaftEntryKey(9, i),
            LogEntry(i, 2).SerializeAsString());
    }
    ASSERT_TRUE(engine->Write(b, true).ok());
    RaftLogStore store(engine.get(), 9);
    auto loaded = store.Load();
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(Indexes(*loaded), (std::vector<uint64_t>{5, 6, 7}));
    EXPECT_EQ(loaded->hard_state.vote(), 3u);
    auto initial = store.LoadInitial();
    ASSERT_TRUE(initial.ok());
    EXPECT_TRUE(initial->entries.empty()) << "moved out of the column";
    EXPECT_EQ(initial->hard_state.term(), 0u);
    EXPECT_EQ(initial->snapshot.index(), 4u) << "the snapshot meta stays";
  }
  auto engine = *storage::Engine::Open(storage::EngineOptions{dir});
  RaftLogStore store(engine.get(), 9);
  auto reloaded = store.Load();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(Indexes(*reloaded), (std::vector<uint64_t>{5, 6, 7}));
  EXPECT_EQ(reloaded->hard_state.term(), 2u);
  EXPECT_EQ(reloaded->hard_state.commit(), 6u);
  engine.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kv::server
