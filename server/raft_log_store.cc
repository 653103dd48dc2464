#include "server/raft_log_store.h"

#include "absl/strings/str_cat.h"
#include "storage/keys.h"

namespace kv::server {

using storage::Column;

RaftLogStore::RaftLogStore(storage::Engine* engine, uint64_t group_id)
    : engine_(engine), group_id_(group_id) {}

absl::StatusOr<PersistedRaftState> RaftLogStore::Load() const {
  PersistedRaftState state;
  auto hs = engine_->Get(Column::kRaft, storage::RaftHardStateKey(group_id_));
  if (!hs.ok()) return hs.status();
  if (hs->has_value() && !state.hard_state.ParseFromString(**hs)) {
    return absl::DataLossError(absl::StrCat("hard state of group ", group_id_, " is corrupted"));
  }
  auto snap = engine_->Get(Column::kRaft, storage::RaftSnapshotKey(group_id_));
  if (!snap.ok()) return snap.status();
  if (snap->has_value() && !state.snapshot.ParseFromString(**snap)) {
    return absl::DataLossError(absl::StrCat("snapshot meta of group ", group_id_, " is corrupted"));
  }
  auto it = engine_->NewIterator(Column::kRaft,
                                 storage::RaftEntryKey(group_id_, state.snapshot.index() + 1),
                                 storage::RaftEntryKey(group_id_ + 1, 0));
  uint64_t expected = state.snapshot.index() + 1;
  for (; it->Valid(); it->Next()) {
    raftpb::Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())) ||
        e.index() != storage::RaftEntryIndexOf(it->key())) {
      return absl::DataLossError(absl::StrCat("log entry of group ", group_id_, " is corrupted"));
    }
    if (e.index() != expected) {
      return absl::DataLossError(
          absl::StrCat("log of group ", group_id_, " has a gap at index ", expected));
    }
    ++expected;
    state.entries.push_back(std::move(e));
  }
  if (!it->status().ok()) return it->status();
  return state;
}

void RaftLogStore::StageReady(const raft::Ready& ready, storage::WriteBatch* batch) {
  std::string end = storage::RaftEntryKey(group_id_ + 1, 0);
  if (ready.snapshot) {
    batch->DeleteRange(Column::kRaft, storage::RaftEntryKey(group_id_, 0), end);
    batch->Put(Column::kRaft, storage::RaftSnapshotKey(group_id_),
               ready.snapshot->SerializeAsString());
  }
  if (ready.truncate_from != 0) {
    batch->DeleteRange(Column::kRaft, storage::RaftEntryKey(group_id_, ready.truncate_from), end);
  }
  std::string buf;
  for (const auto& e : ready.entries) {
    e.SerializeToString(&buf);
    batch->Put(Column::kRaft, storage::RaftEntryKey(group_id_, e.index()), buf);
  }
  if (ready.hard_state) {
    batch->Put(Column::kRaft, storage::RaftHardStateKey(group_id_),
               ready.hard_state->SerializeAsString());
  }
}

void RaftLogStore::StageBootstrap(const raft::BootstrapState& state, storage::WriteBatch* batch) {
  batch->Put(Column::kRaft, storage::RaftSnapshotKey(group_id_),
             state.snapshot.SerializeAsString());
  for (const auto& e : state.entries) {
    batch->Put(Column::kRaft, storage::RaftEntryKey(group_id_, e.index()), e.SerializeAsString());
  }
  batch->Put(Column::kRaft, storage::RaftHardStateKey(group_id_),
             state.hard_state.SerializeAsString());
}

void RaftLogStore::StageDestroy(storage::WriteBatch* batch) const {
  batch->DeleteRange(Column::kRaft, storage::RaftEntryKey(group_id_, 0),
                     storage::RaftEntryKey(group_id_ + 1, 0));
  batch->Delete(Column::kRaft, storage::RaftHardStateKey(group_id_));
  batch->Delete(Column::kRaft, storage::RaftSnapshotKey(group_id_));
}

void RaftLogStore::StageCompaction(const raftpb::SnapshotMeta& meta, storage::WriteBatch* batch) {
  batch->DeleteRange(Column::kRaft, storage::RaftEntryKey(group_id_, 0),
                     storage::RaftEntryKey(group_id_, meta.index() + 1));
  batch->Put(Column::kRaft, storage::RaftSnapshotKey(group_id_), meta.SerializeAsString());
}

}  // namespace kv::server
