// Merges, step by step, on three scripted nodes with real drivers and RocksDB directories: a
// shard split at "m" is merged back (internal.proto: FreezeOp, MergeOp, AbortMergeOp, ThawOp).
//   - a merge takes the neighbour's keys, versions and exactly-once records, retires its
//     replicas on every node, and versions keep growing above both shards' logs;
//   - a frozen shard applies no write and changes no membership;
//   - a merge that is aborted lets the shard thaw, and a merge of that freeze arriving late is
//     refused everywhere;
//   - a merge at an index not above the freeze is refused;
//   - a frozen shard that is itself the survivor of another, aborted merge (a neighbour on its
//     other side) keeps its generation and is still absorbed (seen: every node stopped).
#include <gtest/gtest.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "sharding/key_codec.h"
#include "tests/server/scripted_nodes.h"

namespace kv::server {
namespace {

constexpr uint64_t kKeyspace = 5;
constexpr uint64_t kLeft = 10;
constexpr uint64_t kRight = 11;

class MergeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nodes_.Run(3000);
    for (const auto& [id, d] : nodes_.drivers()) {
      d->CreateGroup(nodes_.Descriptor(kLeft, kKeyspace), {}, nullptr);
    }
    ASSERT_TRUE(nodes_.RunUntil([&] { return nodes_.Leader(kLeft) != 0; }, 5000));
    internal::Command split;
    split.mutable_split()->set_child_group_id(kRight);
    split.mutable_split()->set_split_key(Key("m"));
    split.mutable_split()->set_generation(1);
    auto r = Propose(kLeft, split);
    ASSERT_TRUE(r.ok() && r->result.succeeded()) << r.status();
    ASSERT_TRUE(nodes_.RunUntil([&] { return nodes_.Leader(kRight) != 0; }, 5000));
    for (const char* key : {"a", "b"}) ASSERT_TRUE(Put(kLeft, key, "left").ok());
    for (const char* key : {"x", "y", "z"}) ASSERT_TRUE(Put(kRight, key, "right").ok());
    nodes_.Run(300);
  }

  static std::string Key(const std::string& user) {
    sharding::Keyspace ks;
    ks.id = kKeyspace;
    return sharding::EncodeKey(ks, user);
  }
  absl::StatusOr<WriteOutcome> Propose(uint64_t group, internal::Command cmd,
                                       v1::WriteConsistency level = v1::WRITE_MAJORITY) {
    std::optional<absl::StatusOr<WriteOutcome>> result;
    if (!nodes_.RunUntil([&] { return nodes_.Leader(group) != 0; }, 5000)) {
      return absl::UnavailableError(absl::StrCat("group ", group, " has no leader"));
    }
    nodes_.node(nodes_.Leader(group))
        .Propose(group, std::move(cmd), level, nodes_.Now() + absl::Seconds(5),
                 [&](absl::StatusOr<WriteOutcome> r) { result = std::move(r); });
    nodes_.RunUntil([&] { return result.has_value(); }, 6000);
    return result.value_or(absl::DeadlineExceededError("never answered"));
  }
  absl::StatusOr<WriteOutcome> Put(uint64_t group, const std::string& key, const std::string& value,
                                   uint64_t client = 0, uint64_t seq = 0) {
    internal::Command cmd;
    cmd.set_client_id(client);
    cmd.set_seq(seq);
    cmd.set_first_incomplete_seq(seq);
    cmd.mutable_put()->set_key(key);
    cmd.mutable_put()->set_value(value);
    return Propose(group, std::move(cmd));
  }
  KvStateMachine* Replica(uint64_t node, uint64_t group) {
    return nodes_.node(node).StateMachineOf(group);
  }
  // Freezes the right shard into the left one, with WRITE_ALL; returns the freeze index.
  uint64_t FreezeRight() {
    internal::Command cmd;
    cmd.mutable_freeze()->set_into_group_id(kLeft);
    cmd.mutable_freeze()->set_generation(Replica(1, kRight)->generation());
    for (uint64_t v : {1, 2, 3}) cmd.mutable_freeze()->add_voters(v);
    auto frozen = Propose(kRight, cmd, v1::WRITE_ALL);
    EXPECT_TRUE(frozen.ok() && frozen->result.succeeded()) << frozen.status();
    return frozen.ok() ? frozen->index : 0;
  }
  internal::Command MergeRight(uint64_t freeze_index) {
    internal::Command cmd;
    auto* op = cmd.mutable_merge();
    op->set_absorbed_group_id(kRight);
    op->set_absorbed_freeze_index(freeze_index);
    op->set_absorbed_generation(Replica(1, kRight)->generation());
    op->set_absorbed_span_start(Key("m"));
    op->set_absorbed_span_end(sharding::KeyspaceEnd(kKeyspace));
    op->set_generation(Replica(1, kLeft)->generation());
    for (uint64_t v : {1, 2, 3}) op->add_voters(v);
    return cmd;
  }
  // Writes to the left shard until its log has passed `index`.
  void PadLeftBeyond(uint64_t index) {
    for (int i = 0; i < 100; ++i) {
      auto r = Put(kLeft, "a-pad", "p");
      ASSERT_TRUE(r.ok());
      if (r->index >= index) return;
    }
    FAIL() << "the left shard's log did not pass " << index;
  }

  testing::ScriptedNodes nodes_{3};
};

TEST_F(MergeTest, AMergeTakesTheNeighboursKeysVersionsAndExactlyOnceRecords) {
  auto first = Put(kRight, "w", "once", /*client=*/77, /*seq=*/5);
  ASSERT_TRUE(first.ok());
  uint64_t highest_right = first->index;
  uint64_t freeze = FreezeRight();
  ASSERT_GT(freeze, highest_right);
  // Frozen: a write is not applied, and says so.
  auto refused = Put(kRight, "x", "too late");
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  PadLeftBeyond(freeze);
  auto merged = Propose(kLeft, MergeRight(freeze));
  ASSERT_TRUE(merged.ok()) << merged.status();
  ASSERT_TRUE(merged->result.succeeded());
  EXPECT_GT(merged->index, freeze);
  nodes_.Run(500);
  for (const auto& [id, d] : nodes_.drivers()) {
    EXPECT_EQ(Replica(id, kRight), nullptr) << "node " << id << " kept the absorbed replica";
    KvStateMachine* left = Replica(id, kLeft);
    ASSERT_NE(left, nullptr);
    EXPECT_EQ(left->scope().span.end, sharding::KeyspaceEnd(kKeyspace)) << "node " << id;
    for (const char* key : {"a", "x", "y", "z"}) {
      auto v = left->Get(key);
      ASSERT_TRUE(v.ok() && v->has_value()) << "node " << id << " key " << key;
      EXPECT_EQ((*v)->value, std::string(key) < "m" ? "left" : "right");
    }
  }
  // The retried write the absorbed shard applied is answered as the first time, not applied
  // again.
  auto retried = Put(kLeft, "w", "twice", 77, 5);
  ASSERT_TRUE(retried.ok());
  EXPECT_EQ(retried->result.version(), first->index);
  auto w = Replica(1, kLeft)->Get("w");
  ASSERT_TRUE(w.ok() && w->has_value());
  EXPECT_EQ((*w)->value, "once");
  // Versions keep growing for the absorbed keys.
  auto after = Put(kLeft, "x", "after");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GT(after->index, freeze);
}

TEST_F(MergeTest, AFrozenShardChangesNoMembership) {
  FreezeRight();
  raftpb::ConfChange cc;
  cc.set_type(raftpb::CONF_REMOVE_NODE);
  cc.set_node_id(3);
  std::optional<absl::StatusOr<uint64_t>> changed;
  nodes_.node(nodes_.Leader(kRight)).ChangeMembership(kRight, cc, [&](absl::StatusOr<uint64_t> r) {
    changed = r;
  });
  ASSERT_TRUE(nodes_.RunUntil([&] { return changed.has_value(); }, 2000));
  EXPECT_TRUE(absl::IsFailedPrecondition(changed->status())) << changed->status();
}

TEST_F(MergeTest, AnAbortedMergeThawsTheShardAndALateMergeOfItIsRefused) {
  uint64_t freeze = FreezeRight();
  internal::Command late = MergeRight(freeze);
  internal::Command abort;
  abort.mutable_abort_merge()->set_absorbed_group_id(kRight);
  abort.mutable_abort_merge()->set_absorbed_freeze_index(freeze);
  auto aborted = Propose(kLeft, abort);
  ASSERT_TRUE(aborted.ok() && aborted->result.succeeded());
  auto again = Propose(kLeft, abort);
  EXPECT_TRUE(again.ok() && again->result.succeeded()) << "an abort is idempotent";
  internal::Command thaw;
  thaw.mutable_thaw()->set_freeze_index(freeze);
  auto thawed = Propose(kRight, thaw);
  ASSERT_TRUE(thawed.ok() && thawed->result.succeeded());
  EXPECT_TRUE(Put(kRight, "x", "thawed").ok()) << "the shard takes writes again";
  PadLeftBeyond(freeze);
  auto merged = Propose(kLeft, late);
  ASSERT_TRUE(merged.ok());
  EXPECT_FALSE(merged->result.succeeded()) << "the aborted freeze's merge applied";
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    ASSERT_NE(Replica(id, kRight), nullptr) << "node " << id;
    EXPECT_EQ(Replica(id, kLeft)->scope().span.end, Key("m")) << "node " << id;
  }
}

TEST_F(MergeTest, AFrozenShardThatRecordsAnAbortIsStillAbsorbed) {
  uint64_t freeze = FreezeRight();
  uint64_t generation = Replica(1, kRight)->generation();
  internal::Command merge = MergeRight(freeze);
  // Another merge, of a shard after it into this one, aborted: recorded in its log while frozen.
  internal::Command abort;
  abort.mutable_abort_merge()->set_absorbed_group_id(99);
  abort.mutable_abort_merge()->set_absorbed_freeze_index(7);
  auto aborted = Propose(kRight, abort);
  ASSERT_TRUE(aborted.ok() && aborted->result.succeeded()) << aborted.status();
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    EXPECT_EQ(Replica(id, kRight)->generation(), generation) << "node " << id;
  }
  PadLeftBeyond(freeze);
  auto merged = Propose(kLeft, merge);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(merged->result.succeeded());
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    EXPECT_EQ(Replica(id, kRight), nullptr) << "node " << id;
  }
}

TEST_F(MergeTest, AMergeNotAboveTheFreezeIsRefused) {
  // The right shard's log runs ahead; the left one stays behind its freeze.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Put(kRight, "x", absl::StrCat(i)).ok());
  uint64_t freeze = FreezeRight();
  auto merged = Propose(kLeft, MergeRight(freeze));
  ASSERT_TRUE(merged.ok());
  ASSERT_LE(merged->index, freeze) << "the test needs the left shard's log behind";
  EXPECT_FALSE(merged->result.succeeded());
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    EXPECT_NE(Replica(id, kRight), nullptr) << "node " << id;
  }
}

}  // namespace
}  // namespace kv::server
