// RaftLogStore: a group's Raft state in the `raft` column family: log entries by index, hard
// state, and the meta of the last compaction/snapshot. Stage* functions add to a WriteBatch so
// that every group's ready work goes into one batch with one fsync (group commit).
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

class RaftLogStore {
 public:
  RaftLogStore(storage::Engine* engine, uint64_t group_id);

  absl::StatusOr<PersistedRaftState> Load() const;
  // The persistent part of a Ready: snapshot meta (dropping the whole log), truncation,
  // entries, hard state.
  void StageReady(const raft::Ready& ready, storage::WriteBatch* batch);
  // Initial state of a bootstrapped group.
  void StageBootstrap(const raft::BootstrapState& state, storage::WriteBatch* batch);
  // Deletes the group's whole Raft state (entries, hard state, snapshot meta).
  void StageDestroy(storage::WriteBatch* batch) const;
  // Drops entries up to meta.index() and records the meta.
  void StageCompaction(const raftpb::SnapshotMeta& meta, storage::WriteBatch* batch);

 private:
  storage::Engine* const engine_;
  const uint64_t group_id_;
};

}  // namespace kv::server
