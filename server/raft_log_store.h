// RaftLogStore: a group's Raft state. Log entries and the hard state live in the node's Raft log
// engine (storage/log_engine.h); the snapshot meta (the compaction point and the membership
// there) lives in the `raft` column family, so that it is written atomically with the data of a
// snapshot installed. A bootstrap, a split child and a replica back after a move also put their
// initial hard state and entries in the column, atomically with the replica's record; Load moves
// them into the log engine (so does it for a data directory of a kvd that kept its log in
// RocksDB).
//
// Crash consistency between the two stores, with the column as the authority on what exists:
// - a snapshot's data and meta are synced to RocksDB before the log drops its entries; a log
//   that still holds the old entries is reconciled at Load (kept after a matching entry at the
//   snapshot index, dropped otherwise);
// - a compaction point reaches RocksDB before the log engine may delete the entries (it deletes
//   segments only after syncing RocksDB's WAL);
// - the log records of a group that RocksDB no longer has (destroyed, or whose creation a crash
//   undid) are leftovers, dropped once the store has loaded every group it has.
// Thread-compatible: used by the driver thread.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/v1/raft.pb.h"
#include "raft/raft.h"
#include "storage/engine.h"

namespace kv::server {

struct PersistedRaftState {
  raftpb::HardState hard_state;
  raftpb::SnapshotMeta snapshot;
  std::vector<raftpb::Entry> entries;
  bool empty() const {
    return entries.empty() && hard_state.term() == 0 && snapshot.index() == 0 &&
           snapshot.conf().voters_size() == 0;
  }
};

// Makes a state loaded from the two stores consistent with its snapshot meta (see above): drops
// entries the snapshot covers, raises the term and the commit index to the snapshot's.
absl::Status ReconcileWithSnapshot(uint64_t group, PersistedRaftState* state);

class RaftLogStore {
 public:
  RaftLogStore(storage::Engine* engine, uint64_t group_id);

  // What the `raft` column holds of the group: whether this node has Raft state for it at all.
  absl::StatusOr<PersistedRaftState> LoadInitial() const;
  // The whole state. Moves initial state found in the column into the log engine first (synced
  // in both), and starts the group's log afresh when the log engine has nothing of it (cutting
  // off records of an earlier replica of the same group).
  absl::StatusOr<PersistedRaftState> Load();
  // The persistent part of a Ready: the snapshot meta into `batch` (with the snapshot's data;
  // write it, synced, before `log`), truncation, entries and hard state into `log`.
  void StageReady(const raft::Ready& ready, storage::WriteBatch* batch,
                  storage::LogBatch* log) const;
  // Initial state of a bootstrapped group (into the column; Load moves it).
  void StageBootstrap(const raft::BootstrapState& state, storage::WriteBatch* batch) const;
  // Deletes the group's state from the column; its log records become leftovers.
  void StageDestroy(storage::WriteBatch* batch) const;
  // Records the compaction point; call Compacted once the batch is written.
  void StageCompaction(const raftpb::SnapshotMeta& meta, storage::WriteBatch* batch) const;
  void Compacted(uint64_t index) const;
  // Everything raft holds of the group, as one rewrite of its log (when its old records keep a
  // log segment on disk).
  static void StageRewrite(const raft::Raft& raft, storage::LogBatch* log);

 private:
  absl::StatusOr<PersistedRaftState> MoveInitialState(PersistedRaftState initial);

  storage::Engine* const engine_;
  const uint64_t group_id_;
};

}  // namespace kv::server
