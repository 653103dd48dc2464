// The known races of an online split, each constructed exactly (not hoped for from a seed) on
// three scripted nodes with real drivers and RocksDB directories, by holding back chosen Raft
// messages:
//   - a ReadIndex read that spans a split: routed to the parent, released after the split moved
//     its key to the child and the child took a newer write;
//   - a read served without an epoch check: a follower's eventual read of a key its parent
//     replica gave away;
//   - a split during a leadership transfer;
//   - a child that hears from its leader before its replica applied the split (and a reconcile
//     pass that must not create it empty meanwhile);
//   - a write the parent applied whose answer was lost, retried (same request id) at the child;
// and the child of the parent's leader keeping the parent's lease, and a shard's epoch following
// a membership change (its configuration version) into the split that comes after.
// Each ends with every replica holding the same data and both halves taking writes.
#include <gtest/gtest.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "sharding/key_codec.h"
#include "tests/server/scripted_nodes.h"

namespace kv::server {
namespace {

using Sent = testing::ScriptedNodes::Sent;

constexpr uint64_t kKeyspace = 5;
constexpr uint64_t kParent = 10;
constexpr uint64_t kChild = 11;

class SplitRace : public ::testing::Test {
 protected:
  void SetUp() override {
    nodes_.Run(3000);
    for (const auto& [id, d] : nodes_.drivers()) {
      d->CreateGroup(nodes_.Descriptor(kParent, kKeyspace), {}, nullptr);
    }
    ASSERT_TRUE(nodes_.RunUntil([&] { return nodes_.Leader(kParent) != 0; }, 5000));
    for (const char* key : {"a", "z"}) ASSERT_TRUE(Put(kParent, key, "v1").ok());
    nodes_.Run(300);  // every follower learns the commit and applies
  }

  absl::StatusOr<WriteOutcome> Put(uint64_t group, const std::string& key,
                                   const std::string& value) {
    internal::Command cmd;
    cmd.mutable_put()->set_key(key);
    cmd.mutable_put()->set_value(value);
    return Propose(group, std::move(cmd));
  }
  absl::StatusOr<WriteOutcome> Propose(uint64_t group, internal::Command cmd) {
    std::optional<absl::StatusOr<WriteOutcome>> result;
    if (!nodes_.RunUntil([&] { return nodes_.Leader(group) != 0; }, 5000)) {
      return absl::UnavailableError(absl::StrCat("group ", group, " has no leader"));
    }
    nodes_.node(nodes_.Leader(group))
        .Propose(group, std::move(cmd), v1::WRITE_MAJORITY, nodes_.Now() + absl::Seconds(5),
                 [&](absl::StatusOr<WriteOutcome> r) { result = std::move(r); });
    nodes_.RunUntil([&] { return result.has_value(); }, 6000);
    return result.value_or(absl::DeadlineExceededError("never answered"));
  }
  // Proposes the split of the parent at "m" on `node` (its leader) without waiting for it.
  void ProposeSplit(uint64_t node, std::function<void(absl::StatusOr<WriteOutcome>)> done) {
    internal::Command cmd;
    cmd.mutable_split()->set_child_group_id(kChild);
    cmd.mutable_split()->set_split_key(sharding::EncodeKey(Keyspace(), "m"));
    cmd.mutable_split()->set_generation(nodes_.node(node).StateMachineOf(kParent)->generation());
    nodes_.node(node).Propose(kParent, std::move(cmd), v1::WRITE_MAJORITY,
                              nodes_.Now() + absl::Seconds(5), std::move(done));
  }
  // Proposes on `leader` that `removed` leave the parent; `changed` gets the outcome.
  void ProposeRemoval(uint64_t leader, uint64_t removed,
                      std::optional<absl::StatusOr<uint64_t>>* changed) {
    raftpb::ConfChange cc;
    cc.set_type(raftpb::CONF_REMOVE_NODE);
    cc.set_node_id(removed);
    nodes_.node(leader).ChangeMembership(
        kParent, cc, [changed](absl::StatusOr<uint64_t> index) { *changed = index; });
  }
  static sharding::Keyspace Keyspace() {
    sharding::Keyspace ks;
    ks.id = kKeyspace;
    return ks;
  }
  KvStateMachine* Replica(uint64_t node, uint64_t group) {
    return nodes_.node(node).StateMachineOf(group);
  }
  // The value of `key` in `group`'s replica on `node`, or the refusal.
  absl::StatusOr<std::string> ValueOn(uint64_t node, uint64_t group, const std::string& key) {
    KvStateMachine* sm = Replica(node, group);
    if (!sm) return absl::NotFoundError("no replica");
    auto v = sm->Get(key);
    if (!v.ok()) return v.status();
    if (!*v) return absl::NotFoundError("no key");
    return (**v).value;
  }
  // After the faults: every replica of both halves holds the same data, and both take writes.
  void ExpectHealed() {
    ASSERT_TRUE(Put(kParent, "b", "after").ok());
    ASSERT_TRUE(Put(kChild, "y", "after").ok());
    nodes_.Run(500);
    for (const auto& [id, d] : nodes_.drivers()) {
      ASSERT_NE(Replica(id, kChild), nullptr) << "node " << id;
      EXPECT_EQ(Replica(id, kParent)->scope().span.end, sharding::EncodeKey(Keyspace(), "m"));
      EXPECT_EQ(Replica(id, kChild)->scope().span.start, sharding::EncodeKey(Keyspace(), "m"));
      EXPECT_EQ(ValueOn(id, kParent, "b").value_or("?"), "after") << "node " << id;
      EXPECT_EQ(ValueOn(id, kChild, "y").value_or("?"), "after") << "node " << id;
      EXPECT_EQ(ValueOn(id, kChild, "z").value_or("?"), z_) << "node " << id;
      EXPECT_TRUE(absl::IsOutOfRange(ValueOn(id, kParent, "z").status())) << "node " << id;
    }
  }

  testing::ScriptedNodes nodes_{3};
  std::string z_ = "v1";  // the last acknowledged value of "z"
};

TEST_F(SplitRace, AReadIndexReadThatSpansASplitIsRefusedByTheParent) {
  uint64_t leader = nodes_.Leader(kParent);
  // Hold the parent's heartbeat answers: its ReadIndex round cannot complete.
  nodes_.set_hold([](const Sent& s) {
    return s.m.group_id() == kParent && s.m.type() == raftpb::MSG_HEARTBEAT_RESP;
  });
  std::optional<absl::Status> released;
  bool split_applied_first = false;
  std::optional<absl::StatusOr<std::string>> read;
  ReadRequirement req;
  req.consistency = v1::READ_LINEARIZABLE;
  req.deadline = nodes_.Now() + absl::Seconds(10);
  nodes_.node(leader).Read(kParent, req, [&](absl::Status s) {
    released = s;
    split_applied_first = Replica(leader, kChild) != nullptr;
    read = ValueOn(leader, kParent, "z");  // what the service would serve from the parent
  });
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(leader, [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value(); }, 3000));
  ASSERT_TRUE(split->ok()) << split->status();
  z_ = "v2";
  ASSERT_TRUE(Put(kChild, "z", z_).ok()) << "the child takes writes while the read waits";
  nodes_.set_hold(nullptr);
  ASSERT_TRUE(nodes_.RunUntil([&] { return released.has_value(); }, 3000));
  ASSERT_TRUE(released->ok()) << *released;
  ASSERT_TRUE(split_applied_first) << "the race did not happen: the read completed first";
  // Served from the parent it would be v1, older than an acknowledged write: it must be refused
  // (the service then routes it again, to the child).
  EXPECT_TRUE(absl::IsOutOfRange(read->status())) << read->value_or("(refused otherwise)");
  ExpectHealed();
}

TEST_F(SplitRace, AFollowerReadOfAKeyItsParentGaveAwayIsRefused) {
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(nodes_.Leader(kParent), [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value(); }, 3000));
  ASSERT_TRUE(split->ok());
  z_ = "v2";
  ASSERT_TRUE(Put(kChild, "z", z_).ok());
  uint64_t follower = nodes_.Leader(kParent) % 3 + 1;
  ASSERT_TRUE(nodes_.RunUntil([&] { return Replica(follower, kChild) != nullptr; }, 2000));
  // An eventual read routed (by a stale view) to the follower's parent replica: no quorum and no
  // lease is asked, so only the parent's own span check stands between it and the old "v1".
  std::optional<absl::StatusOr<std::string>> read;
  ReadRequirement req;
  req.consistency = v1::READ_EVENTUAL;
  nodes_.node(follower).Read(kParent, req, [&](absl::Status s) {
    read = s.ok() ? ValueOn(follower, kParent, "z") : absl::StatusOr<std::string>(s);
  });
  ASSERT_TRUE(nodes_.RunUntil([&] { return read.has_value(); }, 1000));
  EXPECT_TRUE(absl::IsOutOfRange(read->status())) << read->value_or("(refused otherwise)");
  EXPECT_EQ(ValueOn(follower, kParent, "a").value_or("?"), "v1") << "its own keys still serve";
  ExpectHealed();
}

TEST_F(SplitRace, ASplitDuringALeadershipTransferLeavesBothHalvesLed) {
  uint64_t leader = nodes_.Leader(kParent);
  uint64_t target = leader % 3 + 1;
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(leader, [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  nodes_.node(leader).TransferLeadership(kParent, target);
  ASSERT_TRUE(nodes_.RunUntil(
      [&] {
        for (const auto& [id, d] : nodes_.drivers()) {
          if (!Replica(id, kChild)) return false;
        }
        return nodes_.Leader(kChild) != 0 && nodes_.Leader(kParent) != 0;
      },
      5000))
      << "the split applied everywhere and both halves elected";
  EXPECT_EQ(nodes_.Leader(kParent), target) << "the transfer went ahead";
  ExpectHealed();
}

TEST_F(SplitRace, AChildThatHearsFromItsLeaderBeforeApplyingTheSplitCatchesUp) {
  uint64_t leader = nodes_.Leader(kParent);
  uint64_t late = leader % 3 + 1;
  // The late node hears nothing of the parent: it cannot apply the split.
  nodes_.set_hold([late](const Sent& s) { return s.m.to() == late && s.m.group_id() == kParent; });
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(leader, [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value(); }, 3000));
  ASSERT_TRUE(split->ok());
  z_ = "v2";
  ASSERT_TRUE(Put(kChild, "z", z_).ok()) << "the child commits with the other two replicas";
  nodes_.Run(1000);  // its messages reach the late node, which has no such group yet
  EXPECT_EQ(Replica(late, kChild), nullptr);
  EXPECT_EQ(nodes_.node(nodes_.Leader(kChild)).Status(kChild).missing_on, std::set<uint64_t>{late});
  // Told the child exists (as the node's reconcile pass would be, from the metadata), the late
  // node must not create it empty: its parent replica still owns the span and will split.
  nodes_.node(late).Reconcile(kChild, nodes_.node(leader).DescriptorOf(kChild));
  nodes_.Run(100);
  EXPECT_EQ(Replica(late, kChild), nullptr) << "created empty beside a parent that owns its span";
  auto old = ValueOn(late, kParent, "z");
  EXPECT_EQ(old.value_or("?"), "v1") << "not split yet: its old value; " << old.status();
  nodes_.set_hold(nullptr);
  ASSERT_TRUE(
      nodes_.RunUntil([&] { return ValueOn(late, kChild, "z").value_or("") == "v2"; }, 5000))
      << "the late replica applies the split, and its child catches up from the leader";
  EXPECT_GT(Replica(late, kChild)->applied_index(), (*split)->index) << "its log continues";
  ExpectHealed();
}

TEST_F(SplitRace, AWriteRetriedAtTheChildIsAnsweredAsTheParentAppliedIt) {
  internal::Command put;
  put.set_client_id(77);
  put.set_seq(1);
  put.set_first_incomplete_seq(1);
  put.mutable_put()->set_key("z");
  put.mutable_put()->set_value("once");
  auto first = Propose(kParent, put);  // applied; say its answer was lost on the way back
  ASSERT_TRUE(first.ok()) << first.status();
  z_ = "v2";
  ASSERT_TRUE(Put(kParent, "z", z_).ok()) << "another writer overwrites it";
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(nodes_.Leader(kParent), [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value(); }, 3000));
  ASSERT_TRUE(split->ok());
  // The client retries, and its route now leads to the child.
  auto retry = Propose(kChild, put);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->result.version(), first->result.version())
      << "answered from the exactly-once records the child inherited, not applied again";
  EXPECT_EQ(ValueOn(nodes_.Leader(kChild), kChild, "z").value_or("?"), "v2")
      << "the later write stays";
  ExpectHealed();
}

TEST_F(SplitRace, TheChildServesLeaseReadsAtOnceWithTheParentsLease) {
  // A busy parent: awake, its lease confirmed by heartbeat rounds (a quiet one holds none).
  ASSERT_TRUE(Put(kParent, "b", "busy").ok());
  nodes_.Run(30);
  uint64_t leader = nodes_.Leader(kParent);
  // The child's heartbeat answers are held: a lease of its own, or a ReadIndex round, would need
  // them; only the lease it inherited lets it serve.
  nodes_.set_hold([](const Sent& s) {
    return s.m.group_id() == kChild && s.m.type() == raftpb::MSG_HEARTBEAT_RESP;
  });
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(leader, [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value(); }, 3000));
  ASSERT_TRUE(split->ok());
  ASSERT_TRUE(nodes_.RunUntil(
      [&] {
        // Led at once by the parent's leader, which has committed its first entry (before that,
        // no leader serves on a lease).
        return nodes_.node(leader).IsLeader(kChild) &&
               nodes_.node(leader).Status(kChild).commit > (*split)->index;
      },
      20));
  std::optional<absl::Status> read;
  ReadRequirement req;
  req.consistency = v1::READ_LEASE;
  req.deadline = nodes_.Now() + absl::Seconds(5);
  nodes_.node(leader).Read(kChild, req, [&](absl::Status s) { read = s; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return read.has_value(); }, 40))
      << "served on the inherited lease, without a heartbeat round";
  EXPECT_TRUE(read->ok()) << *read;
  EXPECT_EQ(ValueOn(leader, kChild, "z").value_or("?"), "v1");
  nodes_.set_hold(nullptr);
  ExpectHealed();
}

TEST_F(SplitRace, AMembershipChangeBumpsTheConfigurationVersionAndTheChildInheritsIt) {
  uint64_t leader = nodes_.Leader(kParent);
  uint64_t removed = leader % 3 + 1;
  ASSERT_EQ(nodes_.node(leader).DescriptorOf(kParent)->epoch().conf_version(), 1u);
  std::optional<absl::StatusOr<uint64_t>> changed;
  ProposeRemoval(leader, removed, &changed);
  ASSERT_TRUE(nodes_.RunUntil([&] { return changed.has_value(); }, 1000));
  ASSERT_TRUE(changed->ok()) << changed->status();
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    if (id == removed) continue;
    auto desc = d->DescriptorOf(kParent);
    ASSERT_TRUE(desc.has_value());
    EXPECT_EQ(desc->epoch().conf_version(), **changed) << "node " << id << ": the change's index";
    EXPECT_EQ(desc->epoch().generation(), 1u);
    EXPECT_EQ(desc->voters_size(), 2) << "node " << id;
  }
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(nodes_.Leader(kParent), [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value(); }, 3000));
  ASSERT_TRUE(split->ok());
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    if (id == removed) continue;
    auto child = d->DescriptorOf(kChild);
    ASSERT_TRUE(child.has_value()) << "node " << id;
    EXPECT_EQ(child->epoch().conf_version(), **changed) << "the child has the parent's members";
    EXPECT_EQ(child->epoch().generation(), 2u);
    EXPECT_EQ(child->voters_size(), 2);
    EXPECT_EQ(d->DescriptorOf(kParent)->epoch().generation(), 2u);
  }
  EXPECT_EQ(nodes_.node(removed).DescriptorOf(kChild), std::nullopt)
      << "the removed node's stale parent never hears of the split";
  ASSERT_TRUE(Put(kChild, "y", "after").ok()) << "two voters of two commit";
}

TEST_F(SplitRace, AMembershipChangeRightAfterASplitIsTheParentsAlone) {
  // The split and the removal of a follower are proposed together: every follower applies both
  // in one batch. The child starts with the members at the split index, all three.
  uint64_t leader = nodes_.Leader(kParent);
  uint64_t removed = leader % 3 + 1;
  std::optional<absl::StatusOr<WriteOutcome>> split;
  ProposeSplit(leader, [&](absl::StatusOr<WriteOutcome> r) { split = r; });
  std::optional<absl::StatusOr<uint64_t>> changed;
  ProposeRemoval(leader, removed, &changed);
  ASSERT_TRUE(nodes_.RunUntil([&] { return split.has_value() && changed.has_value(); }, 3000));
  ASSERT_TRUE(split->ok()) << split->status();
  ASSERT_TRUE(changed->ok()) << changed->status();
  nodes_.Run(300);
  for (const auto& [id, d] : nodes_.drivers()) {
    if (id == removed) continue;
    auto child = d->DescriptorOf(kChild);
    ASSERT_TRUE(child.has_value()) << "node " << id;
    EXPECT_EQ(child->voters_size(), 3) << "node " << id << ": the child's members at the split";
    // With those members' version, not the removal's: a newer-looking version without the
    // removed voter would make the removed node destroy and tombstone its child replica.
    EXPECT_EQ(child->epoch().conf_version(), 1u) << "node " << id;
    EXPECT_EQ(d->DescriptorOf(kParent)->voters_size(), 2) << "node " << id;
  }
  ASSERT_TRUE(Put(kChild, "y", "after").ok());
}

}  // namespace
}  // namespace kv::server
