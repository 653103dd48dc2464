#include "server/raft_log_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/keys.h"

namespace kv::server {

using storage::Column;

namespace {

void AppendEntry(uint64_t group, const raftpb::Entry& e, storage::LogBatch* log) {
  size_t size = e.ByteSizeLong();
  e.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(log->Append(group, e.index(), size)));
}

}  // namespace

absl::Status ReconcileWithSnapshot(uint64_t group, PersistedRaftState* state) {
  const raftpb::SnapshotMeta& snap = state->snapshot;
  auto& entries = state->entries;
  // A crash between syncing a snapshot into RocksDB and dropping the old log leaves the old
  // entries: as Raft does on a snapshot, keep those after an entry matching the snapshot's
  // index and term, and drop the rest.
  if (!entries.empty() && entries.front().index() <= snap.index()) {
    uint64_t at = snap.index() - entries.front().index();
    bool matches = at < entries.size() && entries[at].term() == snap.term();
    entries.erase(entries.begin(),
                  matches ? entries.begin() + static_cast<ptrdiff_t>(at) + 1 : entries.end());
  }
  if (!entries.empty() && entries.front().index() != snap.index() + 1) {
    return absl::DataLossError(absl::StrCat("log of group ", group, " starts at index ",
                                            entries.front().index(), " after a snapshot at ",
                                            snap.index()));
  }
  raftpb::HardState& hs = state->hard_state;
  if (hs.term() < snap.term()) {  // the snapshot's term reached RocksDB, the hard state did not
    hs.set_term(snap.term());
    hs.set_vote(0);  // no vote in that term was durable, so none was ever sent
  }
  uint64_t last = entries.empty() ? snap.index() : entries.back().index();
  hs.set_commit(std::clamp<uint64_t>(hs.commit(), snap.index(), last));
  return absl::OkStatus();
}

RaftLogStore::RaftLogStore(storage::Engine* engine, uint64_t group_id)
    : engine_(engine), group_id_(group_id) {}

absl::StatusOr<PersistedRaftState> RaftLogStore::LoadInitial() const {
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
  auto it = engine_->NewIterator(Column::kRaft, storage::RaftEntryKey(group_id_, 0),
                                 storage::RaftEntryKey(group_id_ + 1, 0));
  for (; it->Valid(); it->Next()) {
    raftpb::Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())) ||
        e.index() != storage::RaftEntryIndexOf(it->key())) {
      return absl::DataLossError(absl::StrCat("log entry of group ", group_id_, " is corrupted"));
    }
    if (!state.entries.empty() && e.index() != state.entries.back().index() + 1) {
      return absl::DataLossError(
          absl::StrCat("log of group ", group_id_, " has a gap at index ", e.index()));
    }
    state.entries.push_back(std::move(e));
  }
  if (!it->status().ok()) return it->status();
  return state;
}

absl::StatusOr<PersistedRaftState> RaftLogStore::MoveInitialState(PersistedRaftState initial) {
  storage::LogEngine& log = engine_->raft_log();
  (void)log.TakeRecovered(group_id_);  // superseded by what the column holds
  storage::LogBatch moved;
  moved.DropGroup(group_id_);
  moved.SetState(group_id_, initial.hard_state.SerializeAsString());
  for (const auto& e : initial.entries) AppendEntry(group_id_, e, &moved);
  if (auto s = log.Write(moved, true); !s.ok()) return s;
  // Synced too: were the column to keep them, a later Load would move them again over newer
  // state in the log.
  storage::WriteBatch cleared(*engine_);
  cleared.Delete(Column::kRaft, storage::RaftHardStateKey(group_id_));
  cleared.DeleteRange(Column::kRaft, storage::RaftEntryKey(group_id_, 0),
                      storage::RaftEntryKey(group_id_ + 1, 0));
  if (auto s = engine_->Write(cleared, true); !s.ok()) return s;
  return initial;
}

absl::StatusOr<PersistedRaftState> RaftLogStore::Load() {
  auto initial = LoadInitial();
  if (!initial.ok()) return initial.status();
  PersistedRaftState state;
  bool in_column = initial->hard_state.ByteSizeLong() > 0 || !initial->entries.empty();
  if (in_column) {
    auto moved = MoveInitialState(*std::move(initial));
    if (!moved.ok()) return moved.status();
    state = *std::move(moved);
  } else {
    state.snapshot = std::move(initial->snapshot);
    storage::RecoveredLog recovered = engine_->raft_log().TakeRecovered(group_id_);
    if (recovered.empty()) {
      // Nothing of this group survives in the log: cut off any records an earlier replica of
      // it left there, so that a later replay cannot mix them into this one's.
      storage::LogBatch fresh;
      fresh.DropGroup(group_id_);
      if (auto s = engine_->raft_log().Write(fresh, true); !s.ok()) return s;
    }
    if (recovered.state && !state.hard_state.ParseFromString(*recovered.state)) {
      return absl::DataLossError(absl::StrCat("hard state of group ", group_id_, " is corrupted"));
    }
    state.entries.reserve(recovered.entries.size());
    for (size_t i = 0; i < recovered.entries.size(); ++i) {
      raftpb::Entry& e = state.entries.emplace_back();
      if (!e.ParseFromString(recovered.entries[i]) || e.index() != recovered.first_index + i) {
        return absl::DataLossError(absl::StrCat("log entry of group ", group_id_, " is corrupted"));
      }
    }
  }
  if (auto s = ReconcileWithSnapshot(group_id_, &state); !s.ok()) return s;
  Compacted(state.snapshot.index());
  return state;
}

void RaftLogStore::StageReady(const raft::Ready& ready, storage::WriteBatch* batch,
                              storage::LogBatch* log) const {
  if (ready.snapshot) {
    batch->Put(Column::kRaft, storage::RaftSnapshotKey(group_id_),
               ready.snapshot->SerializeAsString());
    log->DropEntries(group_id_);
  }
  if (ready.truncate_from != 0) log->Truncate(group_id_, ready.truncate_from);
  for (const auto& e : ready.entries) AppendEntry(group_id_, e, log);
  if (ready.hard_state) log->SetState(group_id_, ready.hard_state->SerializeAsString());
}

void RaftLogStore::StageBootstrap(const raft::BootstrapState& state,
                                  storage::WriteBatch* batch) const {
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

void RaftLogStore::StageCompaction(const raftpb::SnapshotMeta& meta,
                                   storage::WriteBatch* batch) const {
  batch->Put(Column::kRaft, storage::RaftSnapshotKey(group_id_), meta.SerializeAsString());
}

void RaftLogStore::Compacted(uint64_t index) const {
  engine_->raft_log().Compacted(group_id_, index);
}

void RaftLogStore::StageRewrite(const raft::Raft& raft, storage::LogBatch* log) {
  uint64_t group = raft.group_id();
  raftpb::HardState hs;
  hs.set_term(raft.term());
  hs.set_vote(raft.vote());
  hs.set_commit(raft.commit());
  log->DropGroup(group);
  log->SetState(group, hs.SerializeAsString());
  for (uint64_t i = raft.first_index(); i <= raft.last_index(); ++i) {
    AppendEntry(group, raft.log().At(i), log);
  }
}

}  // namespace kv::server
