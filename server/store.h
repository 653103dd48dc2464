// Store: the node's replicas, by group id. It creates a replica (from a descriptor: bootstrapped
// with the descriptor's voters, empty to be filled by the leader's snapshot, or continuing a
// parent's log from a split index), reopens the ones a replica record names after a restart,
// and destroys one (log, hard state, applied state, data span and exactly-once records deleted
// and a tombstone written in one batch, so a crash leaves the replica whole or gone, and a
// destroyed group is never recreated from stale metadata).
//
// Touched only by the driver thread (lookups from other threads go through the StatusBoard).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/v1/internal.pb.h"
#include "server/driver_options.h"
#include "server/group_replica.h"
#include "server/kv_state_machine.h"
#include "storage/engine.h"

namespace kv::server {

// How a new replica starts.
struct ReplicaOrigin {
  enum class Kind {
    // The descriptor's voters, identical on each of them (as a cluster's first group).
    kBootstrap,
    // No state at all: the group's leader sends a snapshot (a replica added by a move).
    kEmpty,
    // The log continues a parent group's at `index` (term `term`): the data is already here
    // (data keys are not prefixed by group), so nothing is copied.
    kSplit,
  };
  Kind kind = Kind::kBootstrap;
  uint64_t index = 0;
  uint64_t term = 0;
  uint64_t clock_ms = 0;  // the parent's cluster clock at the split
  // kSplit: the parent's membership at `index` exactly (joint or not; the descriptor's voters
  // list a joint configuration's two sets as one).
  std::optional<raftpb::ConfState> conf;
};

class Store {
 public:
  using StateMachineFactory =
      std::function<std::unique_ptr<KvStateMachine>(const internal::GroupDescriptor&)>;
  // `addresses`: peer address of a node id ("" when unknown), for new groups' memberships.
  using AddressBook = std::function<std::string(uint64_t node_id)>;

  Store(storage::Engine* engine, const DriverOptions* options, StateMachineFactory factory,
        AddressBook addresses);

  // Reopens every replica this node's records name. Call once, first.
  absl::Status Open();
  // The node's first groups (the metadata group and the default data group): opens the replica,
  // or bootstraps it with the configured initial voters (or waits empty with --join). Also
  // adopts a data directory written before replica records existed.
  absl::StatusOr<GroupReplica*> OpenOrBootstrap(uint64_t group_id, uint64_t shard_id);
  absl::StatusOr<GroupReplica*> Create(const internal::GroupDescriptor& descriptor,
                                       const ReplicaOrigin& origin);
  // What Create writes, staged into `batch` (a restore seeds many replicas in one batch, before
  // the driver opens them).
  absl::Status StageCreate(const internal::GroupDescriptor& descriptor, const ReplicaOrigin& origin,
                           storage::WriteBatch* batch);
  absl::Status Destroy(uint64_t group_id);
  // While a SplitOp of `parent_id` applies at (index, term): stages the child's replica (log
  // continuing at index + 1, its data already in place) and the parent's record with its shrunk
  // span and next generation into the apply's batch. FinishSplits, once that batch is written,
  // opens the children and returns their ids.
  absl::Status StageSplit(uint64_t parent_id, const internal::SplitOp& op, uint64_t index,
                          uint64_t term, uint64_t clock_ms, storage::WriteBatch* batch);
  std::vector<uint64_t> FinishSplits();
  // While a MergeOp of `survivor_id` applies at `index` (its state machine already grown by
  // the absorbed span): checks that this node's replica of the absorbed shard is frozen exactly
  // as the op says, and stages its retirement (log and records deleted, a tombstone, the data
  // kept) and the survivor's record into the apply's batch. FinishMerges, once that batch is
  // written, updates the survivor's descriptor and returns the absorbed groups, which the
  // caller removes with Retire when nothing refers to them any more.
  absl::Status StageMerge(uint64_t survivor_id, const internal::MergeOp& op, uint64_t index,
                          storage::WriteBatch* batch);
  std::vector<uint64_t> FinishMerges();
  // Forgets a replica whose retirement is durable (StageMerge, RetireNow).
  void Retire(uint64_t group_id);
  // Writes, in a batch of its own, the retirement of a frozen replica whose span a snapshot of
  // the survivor covered; the data stays (it is the survivor's now). Retire follows, once
  // nothing refers to the replica.
  absl::Status RetireNow(uint64_t group_id);

  GroupReplica* Find(uint64_t group_id);
  bool WasDestroyed(uint64_t group_id) const { return tombstones_.contains(group_id); }
  // A group destroyed here comes back only with a membership newer than the one it was destroyed
  // with (a move back to this node), never from stale metadata.
  bool MayRecreate(const internal::GroupDescriptor& descriptor) const;
  std::map<uint64_t, std::unique_ptr<GroupReplica>>& replicas() { return replicas_; }

 private:
  // Drops, from the Raft log engine, the records of groups Open did not load.
  absl::Status DropLeftoverLogs();
  absl::StatusOr<GroupReplica*> Load(const internal::GroupDescriptor& descriptor);
  absl::Status ForceNewCluster(uint64_t group_id, PersistedRaftState* state);
  void StageRecord(const internal::GroupDescriptor& descriptor, storage::WriteBatch* batch) const;
  // Deletes a replica's log and records (and its data span unless `keep_data`) with its
  // tombstone, in one synced batch; the replica stays loaded for the caller to drop.
  absl::Status WriteTombstone(GroupReplica& r, bool keep_data);
  // A replica's tombstone, staged into `batch`.
  internal::ReplicaRecord StageTombstone(GroupReplica& r, storage::WriteBatch* batch) const;

  storage::Engine* const engine_;
  const DriverOptions* const options_;
  StateMachineFactory factory_;
  AddressBook addresses_;
  std::map<uint64_t, std::unique_ptr<GroupReplica>> replicas_;
  std::map<uint64_t, internal::ReplicaRecord> tombstones_;  // by group
  // Splits applied in the current apply batch: (parent's new descriptor, child's descriptor).
  std::vector<std::pair<internal::GroupDescriptor, internal::GroupDescriptor>> pending_splits_;
  // Merges applied in the current apply batch: the survivor's new descriptor and the absorbed
  // replica's tombstone.
  std::vector<std::pair<internal::GroupDescriptor, internal::ReplicaRecord>> pending_merges_;
};

}  // namespace kv::server
