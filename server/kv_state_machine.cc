#include "server/kv_state_machine.h"

#include <filesystem>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/metadata.h"
#include "storage/keys.h"

namespace kv::server {
namespace {

using storage::Column;

// Idle exactly-once records are swept (deleted from disk) at most this often by the replicated
// clock; they are dead to every command already once idle past the TTL (see Apply).
constexpr uint64_t kSweepEveryMs = 10'000;
// A client that never acknowledges answers (first_incomplete_seq stays put) would grow its record
// without bound; past this many, its oldest answers are dropped and those seqs count as answered
// (a retry of one is refused, never applied twice).
constexpr size_t kMaxAnswersPerSession = 4096;

// Applied record: index, term and the replicated clock (ms), 8 bytes BE each. Records
// written before the clock existed hold 16 bytes (clock 0).
std::string EncodeApplied(uint64_t index, uint64_t term, uint64_t clock_ms) {
  std::string out;
  storage::AppendBigEndian64(&out, index);
  storage::AppendBigEndian64(&out, term);
  storage::AppendBigEndian64(&out, clock_ms);
  return out;
}

struct AppliedRecord {
  uint64_t index = 0, term = 0, clock_ms = 0;
};
std::optional<AppliedRecord> DecodeApplied(std::string_view raw) {
  if (raw.size() != 16 && raw.size() != 24) return std::nullopt;
  AppliedRecord r;
  r.index = storage::ReadBigEndian64(raw);
  r.term = storage::ReadBigEndian64(raw.substr(8));
  if (raw.size() == 24) r.clock_ms = storage::ReadBigEndian64(raw.substr(16));
  return r;
}

std::string ConfKey(uint64_t group_id) {
  std::string key = "c";
  storage::AppendBigEndian64(&key, group_id);
  return key;
}

}  // namespace

KvStateMachine::KvStateMachine(storage::Engine* engine, uint64_t group_id, uint64_t shard_id)
    : KvStateMachine(engine, group_id, ShardScope::WholeKeyspace(shard_id)) {}

KvStateMachine::KvStateMachine(storage::Engine* engine, uint64_t group_id, ShardScope scope)
    : engine_(engine),
      group_id_(group_id),
      scope_(std::move(scope)),
      keyspace_begin_(sharding::KeyspaceBegin(scope_.keyspace.id)),
      keyspace_end_(sharding::KeyspaceEnd(scope_.keyspace.id)) {}

std::optional<std::string> KvStateMachine::DataKeyOf(std::string_view user_key) const {
  std::string key = sharding::EncodeKey(scope_.keyspace, user_key);
  if (!scope_.span.Contains(key)) return std::nullopt;
  return key;
}

absl::StatusOr<KvStateMachine::ClientSession> KvStateMachine::ParseSession(std::string_view key,
                                                                           std::string_view value) {
  internal::ClientSessionRecord record;
  if (key.size() != 17 || !record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return absl::DataLossError("client session record is malformed");
  }
  ClientSession session;
  session.first_incomplete_seq = record.first_incomplete_seq();
  session.last_index = record.last_index();
  session.last_clock_ms = record.last_clock_ms();
  for (auto& answer : *record.mutable_answers()) {
    session.results[answer.seq()] = std::move(*answer.mutable_result());
  }
  return session;
}

absl::Status KvStateMachine::Load() {
  if (auto s = FinishInstall(); !s.ok()) return s;
  // The shard's own record of its span wins over the descriptor it was opened with (a split or a
  // snapshot may have changed it since).
  auto shard_state = engine_->Get(Column::kMeta, storage::ShardStateKey(group_id_));
  if (!shard_state.ok()) return shard_state.status();
  if (shard_state->has_value()) {
    internal::ShardState state;
    if (!state.ParseFromString(**shard_state) || state.span_start() >= state.span_end()) {
      return absl::DataLossError(
          absl::StrCat("shard record of group ", group_id_, " is malformed"));
    }
    scope_.span = {state.span_start(), state.span_end()};
    generation_ = state.generation();
    frozen_at_.store(state.frozen_at(), std::memory_order_release);
    frozen_into_ = state.frozen_into();
    settled_.assign(state.settled().begin(), state.settled().end());
  }
  auto applied = engine_->Get(Column::kMeta, storage::AppliedIndexKey(group_id_));
  if (!applied.ok()) return applied.status();
  AppliedRecord record_of_applied;
  if (applied->has_value()) {
    auto decoded = DecodeApplied(**applied);
    if (!decoded) {
      return absl::DataLossError(
          absl::StrCat("applied index record of group ", group_id_, " is malformed"));
    }
    record_of_applied = *decoded;
  }
  uint64_t index = record_of_applied.index, term = record_of_applied.term;
  clock_ms_ = record_of_applied.clock_ms;
  next_sweep_ms_ = 0;
  sessions_.clear();
  std::string prefix = storage::ClientSessionPrefix(group_id_);
  auto it = engine_->NewIterator(Column::kMeta, prefix, storage::PrefixSuccessor(prefix));
  for (; it->Valid(); it->Next()) {
    auto session = ParseSession(it->key(), it->value());
    if (!session.ok()) return session.status();
    sessions_[storage::ClientOfSessionKey(it->key())] = *std::move(session);
  }
  if (!it->status().ok()) return it->status();
  if (system_observer_ && owns_system_keyspace()) {
    auto sys = engine_->NewIterator(Column::kData, storage::ShardBegin(kSystemShardId),
                                    storage::ShardEnd(kSystemShardId));
    for (; sys->Valid(); sys->Next()) {
      auto decoded = storage::DecodeVersionedValue(sys->value());
      if (!decoded) return absl::DataLossError("system value is malformed");
      system_observer_(std::string(storage::UserKeyOf(sys->key())), std::string(decoded->value));
    }
    if (!sys->status().ok()) return sys->status();
  }
  absl::MutexLock lock(&mu_);
  applied_index_ = index;
  applied_term_ = term;
  visible_index_.store(index, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StoredValue>> KvStateMachine::GetSystem(std::string_view key) const {
  return ReadThrough({}, storage::DataKey(kSystemShardId, key));
}

uint64_t KvStateMachine::applied_index() const {
  absl::MutexLock lock(&mu_);
  return applied_index_;
}

uint64_t KvStateMachine::applied_term() const {
  absl::MutexLock lock(&mu_);
  return applied_term_;
}

absl::StatusOr<std::unique_ptr<SnapshotSource>> KvStateMachine::OpenSnapshot(
    raftpb::SnapshotMeta* meta) const {
  auto snap = engine_->GetSnapshot();
  auto applied = engine_->Get(Column::kMeta, storage::AppliedIndexKey(group_id_), snap.get());
  if (!applied.ok()) return applied.status();
  std::optional<AppliedRecord> record =
      applied->has_value() ? DecodeApplied(**applied) : std::nullopt;
  if (!record) return absl::FailedPreconditionError("nothing applied yet");
  meta->set_index(record->index);
  meta->set_term(record->term);
  auto conf = engine_->Get(Column::kMeta, ConfKey(group_id_), snap.get());
  if (!conf.ok()) return conf.status();
  if (!conf->has_value() || !meta->mutable_conf()->ParseFromString(**conf)) {
    return absl::FailedPreconditionError("membership not recorded yet");
  }
  std::string clock, clock_record;
  storage::AppendBigEndian64(&clock, record->clock_ms);
  AppendSnapshotRecord(&clock_record, kClockColumn, kClockKey, clock);
  AppendSnapshotRecord(&clock_record, kShardColumn, kShardKey, ShardStateRecord());
  return std::make_unique<SnapshotSource>(engine_, std::move(snap), std::move(clock_record),
                                          scope_.span.start, scope_.span.end,
                                          storage::ClientSessionPrefix(group_id_));
}

absl::Status KvStateMachine::BuildSnapshot(raftpb::SnapshotMeta* meta, std::string* data) const {
  auto source = OpenSnapshot(meta);
  if (!source.ok()) return source.status();
  auto all = (*source)->ReadAll();
  if (!all.ok()) return all.status();
  *data = *std::move(all);
  return absl::OkStatus();
}

absl::Status KvStateMachine::CheckSnapshot(const ReceivedSnapshot& snapshot) const {
  // A shard that split (or will) sends its newer span with its generation: taken as long as it
  // stays in this keyspace.
  bool newer_span = snapshot.generation > generation_ && snapshot.data_begin.size() >= 8 &&
                    snapshot.data_end.size() >= 8 &&
                    snapshot.data_begin >= sharding::KeyspaceBegin(scope_.keyspace.id) &&
                    snapshot.data_end <= sharding::KeyspaceEnd(scope_.keyspace.id);
  if (!newer_span &&
      (snapshot.data_begin != scope_.span.start || snapshot.data_end != scope_.span.end)) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot for group ", group_id_, " covers another data span"));
  }
  return absl::OkStatus();
}

void KvStateMachine::StageInstall(const raftpb::SnapshotMeta& meta,
                                  const ReceivedSnapshot& snapshot,
                                  storage::WriteBatch* batch) const {
  internal::SnapshotInstall install;
  for (const auto& f : snapshot.files) {
    auto* file = install.add_files();
    file->set_column(static_cast<uint32_t>(f.column));
    file->set_path(f.path);
  }
  install.set_applied_record(EncodeApplied(meta.index(), meta.term(), snapshot.clock_ms));
  install.set_conf_record(meta.conf().SerializeAsString());
  install.set_dir(snapshot.dir);
  install.set_shard_state(snapshot.shard_state);
  batch->Put(Column::kMeta, storage::SnapshotInstallKey(group_id_), install.SerializeAsString());
}

absl::Status KvStateMachine::FinishInstall() {
  auto raw = engine_->Get(Column::kMeta, storage::SnapshotInstallKey(group_id_));
  if (!raw.ok()) return raw.status();
  if (!raw->has_value()) return absl::OkStatus();
  internal::SnapshotInstall install;
  if (!install.ParseFromString(**raw)) {
    return absl::DataLossError(
        absl::StrCat("snapshot install record of group ", group_id_, " is malformed"));
  }
  std::filesystem::path root(engine_->path());
  std::vector<storage::IngestFile> files;
  for (const auto& f : install.files()) {
    if (f.column() > static_cast<uint32_t>(Column::kMeta)) {
      return absl::DataLossError("snapshot install record names an unknown column");
    }
    files.push_back({static_cast<Column>(f.column()), (root / f.path()).string()});
  }
  // Ingesting again after a crash is harmless: each file's tombstone clears the span and its
  // keys fill it, with nothing of this group written in between (it was not loaded).
  if (auto s = engine_->Ingest(files); !s.ok()) {
    return absl::DataLossError(absl::StrCat("installing the snapshot of group ", group_id_,
                                            " from ", install.dir(), ": ", s.message()));
  }
  storage::WriteBatch batch(*engine_);
  batch.Put(Column::kMeta, storage::AppliedIndexKey(group_id_), install.applied_record());
  batch.Put(Column::kMeta, ConfKey(group_id_), install.conf_record());
  if (!install.shard_state().empty()) {
    batch.Put(Column::kMeta, storage::ShardStateKey(group_id_), install.shard_state());
  }
  batch.Delete(Column::kMeta, storage::SnapshotInstallKey(group_id_));
  if (auto s = engine_->Write(batch, /*sync=*/true); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::remove_all(root / install.dir(), ec);
  return absl::OkStatus();
}

void KvStateMachine::StageStartAt(uint64_t index, uint64_t term, uint64_t clock_ms,
                                  const raftpb::ConfState& conf, storage::WriteBatch* batch) const {
  batch->Put(Column::kMeta, storage::AppliedIndexKey(group_id_),
             EncodeApplied(index, term, clock_ms));
  batch->Put(Column::kMeta, ConfKey(group_id_), conf.SerializeAsString());
  StageShardState(batch);
}

std::string KvStateMachine::ShardStateRecord() const {
  internal::ShardState state;
  state.set_span_start(scope_.span.start);
  state.set_span_end(scope_.span.end);
  state.set_generation(generation_);
  state.set_frozen_at(frozen_at());
  state.set_frozen_into(frozen_into_);
  for (const auto& m : settled_) *state.add_settled() = m;
  return state.SerializeAsString();
}

void KvStateMachine::StageShardState(storage::WriteBatch* batch) const {
  batch->Put(Column::kMeta, storage::ShardStateKey(group_id_), ShardStateRecord());
}

void KvStateMachine::StageDestroy(storage::WriteBatch* batch) const {
  batch->DeleteRange(Column::kData, scope_.span.start, scope_.span.end);
  StageRetire(batch);
}

void KvStateMachine::StageRetire(storage::WriteBatch* batch) const {
  batch->Delete(Column::kMeta, storage::AppliedIndexKey(group_id_));
  batch->Delete(Column::kMeta, ConfKey(group_id_));
  batch->Delete(Column::kMeta, storage::ShardStateKey(group_id_));
  std::string sessions = storage::ClientSessionPrefix(group_id_);
  batch->DeleteRange(Column::kMeta, sessions, storage::PrefixSuccessor(sessions));
}

absl::StatusOr<std::optional<StoredValue>> KvStateMachine::ReadThrough(
    const Overlay& overlay, const std::string& data_key) const {
  if (auto it = overlay.find(data_key); it != overlay.end()) return it->second;
  auto raw = engine_->Get(Column::kData, data_key);
  if (!raw.ok()) return raw.status();
  if (!raw->has_value()) return std::optional<StoredValue>();
  auto decoded = storage::DecodeVersionedValue(**raw);
  if (!decoded) return absl::DataLossError("stored value is malformed");
  return std::optional<StoredValue>(StoredValue{std::string(decoded->value), decoded->version});
}

void KvStateMachine::WriteSystem(uint64_t index, const std::string& key, const std::string& value,
                                 Overlay* overlay, storage::WriteBatch* batch) {
  std::string data_key = storage::DataKey(kSystemShardId, key);
  batch->Put(Column::kData, data_key, storage::EncodeVersionedValue(index, value));
  (*overlay)[data_key] = StoredValue{value, index};
  system_writes_.emplace_back(key, value);
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyOne(uint64_t index, uint64_t term,
                                                                 const internal::Command& cmd,
                                                                 Overlay* overlay,
                                                                 storage::WriteBatch* batch) {
  internal::CommandResult result;
  result.set_version(index);
  auto write = [&](const std::string& data_key, std::string_view value) {
    batch->Put(Column::kData, data_key, storage::EncodeVersionedValue(index, value));
    (*overlay)[data_key] = StoredValue{std::string(value), index};
  };
  // The key's place in this shard, checked as the command applies (the epoch check at apply): a
  // command proposed before a split moved its key away writes nothing here.
  std::optional<std::string> owned;
  bool data_command = cmd.op_case() == internal::Command::kPut ||
                      cmd.op_case() == internal::Command::kDel ||
                      cmd.op_case() == internal::Command::kCas;
  if (frozen_at() != 0 && data_command) {
    // Frozen for a merge: its data is final until it thaws or the survivor takes it over.
    result.set_version(0);
    result.set_frozen(true);
    return result;
  }
  switch (cmd.op_case()) {
    case internal::Command::kPut:
      owned = DataKeyOf(cmd.put().key());
      break;
    case internal::Command::kDel:
      owned = DataKeyOf(cmd.del().key());
      break;
    case internal::Command::kCas:
      owned = DataKeyOf(cmd.cas().key());
      break;
    default:
      owned = "";
  }
  if (!owned) {
    result.set_version(0);
    result.set_outside_shard(true);
    return result;
  }
  switch (cmd.op_case()) {
    case internal::Command::kPut: {
      write(*owned, cmd.put().value());
      result.set_succeeded(true);
      break;
    }
    case internal::Command::kDel: {
      const std::string& data_key = *owned;
      auto current = ReadThrough(*overlay, data_key);
      if (!current.ok()) return current.status();
      result.set_succeeded(true);
      result.set_existed(current->has_value());
      if (current->has_value()) {
        batch->Delete(Column::kData, data_key);
        (*overlay)[data_key] = std::nullopt;
      }
      break;
    }
    case internal::Command::kCas: {
      const auto& cas = cmd.cas();
      const std::string& data_key = *owned;
      auto current = ReadThrough(*overlay, data_key);
      if (!current.ok()) return current.status();
      bool matches = cas.expect_absent()
                         ? !current->has_value()
                         : current->has_value() && (*current)->version == cas.expected_version();
      result.set_succeeded(matches);
      if (matches) {
        write(data_key, cas.value());
      } else {
        result.set_version(0);
        if (current->has_value()) {
          result.set_existed(true);
          result.set_current_value((*current)->value);
          result.set_current_version((*current)->version);
        }
      }
      break;
    }
    case internal::Command::kSystemPut: {
      if (!owns_system_keyspace()) {
        // Settings belong to the metadata group; a data group ignores them (no-op entry).
        result.set_succeeded(false);
        break;
      }
      WriteSystem(index, cmd.system_put().key(), cmd.system_put().value(), overlay, batch);
      result.set_succeeded(true);
      break;
    }
    case internal::Command::kCreateGroups: {
      if (!owns_system_keyspace()) {
        result.set_succeeded(false);
        break;
      }
      std::vector<internal::GroupDescriptor> groups(cmd.create_groups().groups().begin(),
                                                    cmd.create_groups().groups().end());
      auto first = RecordNewGroups(index, std::move(groups), std::nullopt, overlay, batch);
      if (!first.ok()) return first.status();
      result.set_current_version(*first);
      result.set_succeeded(true);
      break;
    }
    case internal::Command::kCreateKeyspace: {
      if (!owns_system_keyspace()) {
        result.set_succeeded(false);
        break;
      }
      return ApplyCreateKeyspace(index, cmd.create_keyspace(), overlay, batch);
    }
    case internal::Command::kSplit:
      return ApplySplit(index, term, cmd.split(), batch);
    case internal::Command::kFreeze:
      return ApplyFreeze(index, cmd.freeze(), batch);
    case internal::Command::kThaw:
      return ApplyThaw(cmd.thaw(), batch);
    case internal::Command::kMerge:
      return ApplyMerge(index, cmd.merge(), batch);
    case internal::Command::kAbortMerge:
      return ApplyAbortMerge(cmd.abort_merge(), batch);
    case internal::Command::kReserveGroupIds: {
      if (!owns_system_keyspace()) {
        result.set_succeeded(false);
        break;
      }
      auto first = TakeGroupIds(
          index, std::clamp<uint32_t>(cmd.reserve_group_ids().count(), 1, 1000), overlay, batch);
      if (!first.ok()) return first.status();
      result.set_current_version(*first);
      result.set_succeeded(true);
      break;
    }
    case internal::Command::kDropKeyspace: {
      if (!owns_system_keyspace()) {
        result.set_succeeded(false);
        break;
      }
      return ApplyDropKeyspace(index, cmd.drop_keyspace(), overlay, batch);
    }
    case internal::Command::OP_NOT_SET:
      // No-op entries (leader's first entry) change nothing.
      result.set_succeeded(true);
      break;
  }
  return result;
}

absl::StatusOr<uint64_t> KvStateMachine::TakeGroupIds(uint64_t index, uint64_t count,
                                                      Overlay* overlay,
                                                      storage::WriteBatch* batch) {
  // Ids come from the replicated allocator, in log order: every replica assigns the same.
  auto stored = ReadThrough(*overlay, storage::DataKey(kSystemShardId, kGroupAllocatorKey));
  if (!stored.ok()) return stored.status();
  internal::GroupIdAllocator allocator;
  if (*stored && !allocator.ParseFromString((*stored)->value)) {
    return absl::DataLossError("the group id allocator record is corrupted");
  }
  uint64_t first = std::max(allocator.next_group_id(), kFirstAllocatedGroupId);
  allocator.set_format(kMetadataFormat);
  allocator.set_next_group_id(first + count);
  WriteSystem(index, kGroupAllocatorKey, allocator.SerializeAsString(), overlay, batch);
  return first;
}

absl::StatusOr<uint64_t> KvStateMachine::RecordNewGroups(
    uint64_t index, std::vector<internal::GroupDescriptor> groups,
    std::optional<uint64_t> keyspace_id, Overlay* overlay, storage::WriteBatch* batch) {
  auto taken = TakeGroupIds(index, groups.size(), overlay, batch);
  if (!taken.ok()) return taken.status();
  uint64_t first = *taken;
  uint64_t next = first;
  for (auto& d : groups) {
    d.set_format(kMetadataFormat);
    d.set_group_id(next);
    if (keyspace_id) {
      d.set_shard_id(0);
      d.set_keyspace_id(*keyspace_id);
      d.set_span_start(sharding::RebaseKey(d.span_start(), *keyspace_id));
      d.set_span_end(sharding::RebaseKey(d.span_end(), *keyspace_id));
    } else {
      d.set_shard_id(next);
    }
    ++next;
    WriteSystem(index, GroupKey(d.group_id()), d.SerializeAsString(), overlay, batch);
  }
  return first;
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyCreateKeyspace(
    uint64_t index, const internal::CreateKeyspaceOp& op, Overlay* overlay,
    storage::WriteBatch* batch) {
  internal::CommandResult result;
  std::string key = KeyspaceKey(op.keyspace().name());
  auto existing = ReadThrough(*overlay, storage::DataKey(kSystemShardId, key));
  if (!existing.ok()) return existing.status();
  if (existing->has_value() && !(*existing)->value.empty()) {
    result.set_existed(true);  // the name is taken: nothing changes
    return result;
  }
  auto stored = ReadThrough(*overlay, storage::DataKey(kSystemShardId, kKeyspaceAllocatorKey));
  if (!stored.ok()) return stored.status();
  internal::KeyspaceIdAllocator allocator;
  if (*stored && !allocator.ParseFromString((*stored)->value)) {
    return absl::DataLossError("the keyspace id allocator record is corrupted");
  }
  uint64_t id = std::max<uint64_t>(allocator.next_keyspace_id(), sharding::kDefaultKeyspaceId + 1);
  std::vector<internal::GroupDescriptor> groups(op.groups().begin(), op.groups().end());
  auto first = RecordNewGroups(index, std::move(groups), id, overlay, batch);
  if (!first.ok()) return first.status();
  internal::KeyspaceRecord record = op.keyspace();
  record.set_format(kMetadataFormat);
  record.set_id(id);
  WriteSystem(index, key, record.SerializeAsString(), overlay, batch);
  allocator.set_format(kMetadataFormat);
  allocator.set_next_keyspace_id(id + 1);
  WriteSystem(index, kKeyspaceAllocatorKey, allocator.SerializeAsString(), overlay, batch);
  result.set_succeeded(true);
  result.set_version(*first);
  result.set_current_version(id);
  return result;
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyDropKeyspace(
    uint64_t index, const internal::DropKeyspaceOp& op, Overlay* overlay,
    storage::WriteBatch* batch) {
  internal::CommandResult result;
  std::string key = KeyspaceKey(op.name());
  auto existing = ReadThrough(*overlay, storage::DataKey(kSystemShardId, key));
  if (!existing.ok()) return existing.status();
  internal::KeyspaceRecord record;
  if (!existing->has_value() || (*existing)->value.empty() ||
      !record.ParseFromString((*existing)->value) || record.id() != op.keyspace_id()) {
    return result;  // no such keyspace (any more): nothing changes
  }
  for (uint64_t group : op.group_ids()) {
    auto stored = ReadThrough(*overlay, storage::DataKey(kSystemShardId, GroupKey(group)));
    if (!stored.ok()) return stored.status();
    internal::GroupDescriptor d;
    if (!stored->has_value() || !d.ParseFromString((*stored)->value) ||
        d.keyspace_id() != record.id() || d.span_end().empty()) {
      continue;  // not a shard of this keyspace
    }
    WriteSystem(index, GroupKey(group), "", overlay, batch);
  }
  WriteSystem(index, key, "", overlay, batch);
  result.set_succeeded(true);
  return result;
}

void KvStateMachine::ForgetAnswered(ClientSession* session, uint64_t first_incomplete) {
  if (session->results.size() > kMaxAnswersPerSession) {
    auto keep_from = std::prev(session->results.end(), kMaxAnswersPerSession);
    first_incomplete = std::max(first_incomplete, keep_from->first);
  }
  if (first_incomplete <= session->first_incomplete_seq) return;
  session->first_incomplete_seq = first_incomplete;
  session->results.erase(session->results.begin(), session->results.lower_bound(first_incomplete));
}

void KvStateMachine::StageSession(uint64_t client_id, const ClientSession& session,
                                  storage::WriteBatch* batch) const {
  StageSessionOf(group_id_, client_id, session, batch);
}

void KvStateMachine::StageSessionOf(uint64_t group_id, uint64_t client_id,
                                    const ClientSession& session,
                                    storage::WriteBatch* batch) const {
  internal::ClientSessionRecord record;
  record.set_first_incomplete_seq(session.first_incomplete_seq);
  record.set_last_index(session.last_index);
  record.set_last_clock_ms(session.last_clock_ms);
  for (const auto& [seq, result] : session.results) {
    auto* answer = record.add_answers();
    answer->set_seq(seq);
    *answer->mutable_result() = result;
  }
  batch->Put(Column::kMeta, storage::ClientSessionKey(group_id, client_id),
             record.SerializeAsString());
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplySplit(uint64_t index, uint64_t term,
                                                                   const internal::SplitOp& op,
                                                                   storage::WriteBatch* batch) {
  internal::CommandResult result;
  // Every replica decides alike from its own state: the generation the proposer saw, and a
  // key strictly inside the span (both halves non-empty). Otherwise nothing changes.
  // The default keyspace is served by one group (it does not split yet).
  if (!split_stager_ || owns_system_keyspace() || frozen_at() != 0 ||
      scope_.keyspace.id == sharding::kDefaultKeyspaceId || op.generation() != generation_ ||
      op.split_key() <= scope_.span.start || op.split_key() >= scope_.span.end ||
      op.child_group_id() < kFirstAllocatedGroupId || op.child_group_id() == group_id_) {
    return result;
  }
  // A replica that cannot stage what every other replica does must stop, not diverge.
  if (auto s = split_stager_(op, index, term, clock_ms_, batch); !s.ok()) return s;
  // The child answers retries of writes the parent applied, whichever side their key is on.
  for (const auto& [client, session] : sessions_) {
    StageSessionOf(op.child_group_id(), client, session, batch);
  }
  scope_.span.end = op.split_key();
  ++generation_;
  StageShardState(batch);
  result.set_succeeded(true);
  result.set_version(index);
  return result;
}

bool KvStateMachine::MembersAre(uint64_t index,
                                const google::protobuf::RepeatedField<uint64_t>& voters) const {
  if (!members_at_) return false;
  raftpb::ConfState conf = members_at_(index);
  if (conf.learners_size() > 0 || conf.voters_outgoing_size() > 0 ||
      conf.voters_size() != voters.size()) {
    return false;
  }
  for (const auto& m : conf.voters()) {
    if (std::find(voters.begin(), voters.end(), m.id()) == voters.end()) return false;
  }
  return true;
}

const internal::ShardState::SettledMerge* KvStateMachine::Settled(uint64_t absorbed,
                                                                  uint64_t freeze_index) const {
  for (const auto& m : settled_) {
    if (m.absorbed_group_id() == absorbed && m.absorbed_freeze_index() == freeze_index) return &m;
  }
  return nullptr;
}

void KvStateMachine::Settle(uint64_t absorbed, uint64_t freeze_index, bool merged) {
  constexpr size_t kSettledKept = 16;
  internal::ShardState::SettledMerge m;
  m.set_absorbed_group_id(absorbed);
  m.set_absorbed_freeze_index(freeze_index);
  m.set_merged(merged);
  settled_.push_back(m);
  if (settled_.size() > kSettledKept) settled_.erase(settled_.begin());
}

bool KvStateMachine::Mergeable() const {
  return !owns_system_keyspace() && scope_.keyspace.id != sharding::kDefaultKeyspaceId &&
         scope_.keyspace.strategy == sharding::Strategy::kRange;
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyFreeze(uint64_t index,
                                                                    const internal::FreezeOp& op,
                                                                    storage::WriteBatch* batch) {
  internal::CommandResult result;
  if (!Mergeable() || frozen_at() != 0 || op.generation() != generation_ ||
      op.into_group_id() == group_id_ || op.into_group_id() < kFirstAllocatedGroupId ||
      !MembersAre(index, op.voters())) {
    return result;
  }
  frozen_at_.store(index, std::memory_order_release);
  frozen_into_ = op.into_group_id();
  StageShardState(batch);
  result.set_succeeded(true);
  result.set_version(index);
  return result;
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyThaw(const internal::ThawOp& op,
                                                                  storage::WriteBatch* batch) {
  internal::CommandResult result;
  if (frozen_at() == 0 || op.freeze_index() != frozen_at()) return result;
  frozen_at_.store(0, std::memory_order_release);
  frozen_into_ = 0;
  // A FreezeOp that was delayed (a retry, a slow forward) and applies after this thaw carries
  // the old generation: it is refused.
  ++generation_;
  StageShardState(batch);
  result.set_succeeded(true);
  return result;
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyMerge(uint64_t index,
                                                                   const internal::MergeOp& op,
                                                                   storage::WriteBatch* batch) {
  internal::CommandResult result;
  const std::string& start = op.absorbed_span_start();
  const std::string& end = op.absorbed_span_end();
  bool on_left = end == scope_.span.start, on_right = start == scope_.span.end;
  // Every replica decides alike, from the command and its own replicated state.
  if (!merge_stager_ || !Mergeable() || frozen_at() != 0 || op.generation() != generation_ ||
      op.absorbed_group_id() == group_id_ || index <= op.absorbed_freeze_index() ||
      !(on_left || on_right) || start >= end || start < keyspace_begin_ || end > keyspace_end_ ||
      Settled(op.absorbed_group_id(), op.absorbed_freeze_index()) ||
      !MembersAre(index, op.voters())) {
    return result;
  }
  scope_.span = on_left ? sharding::KeyRange{start, scope_.span.end}
                        : sharding::KeyRange{scope_.span.start, end};
  generation_ = std::max(generation_, op.absorbed_generation()) + 1;
  // An error from here on stops the node (the round is not written).
  if (auto s = merge_stager_(op, index, batch); !s.ok()) return s;
  if (auto s = TakeSessionsOf(op.absorbed_group_id(), batch); !s.ok()) return s;
  Settle(op.absorbed_group_id(), op.absorbed_freeze_index(), /*merged=*/true);
  StageShardState(batch);
  result.set_succeeded(true);
  result.set_version(index);
  return result;
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyAbortMerge(
    const internal::AbortMergeOp& op, storage::WriteBatch* batch) {
  internal::CommandResult result;
  if (const auto* settled = Settled(op.absorbed_group_id(), op.absorbed_freeze_index())) {
    result.set_succeeded(!settled->merged());
    result.set_existed(settled->merged());
    return result;
  }
  Settle(op.absorbed_group_id(), op.absorbed_freeze_index(), /*merged=*/false);
  // A MergeOp of this freeze still on its way (a retry, a slow forward) carries the old
  // generation: it is refused, however many merges settle here meanwhile. A frozen shard keeps
  // its generation (the merge absorbing it names it); it refuses every MergeOp anyway, and its
  // thaw moves the generation on.
  if (frozen_at() == 0) ++generation_;
  StageShardState(batch);
  result.set_succeeded(true);
  return result;
}

absl::Status KvStateMachine::TakeSessionsOf(uint64_t absorbed_group_id,
                                            storage::WriteBatch* batch) {
  // The absorbed shard is frozen, and its freeze was applied with an fsync: its records on
  // disk are final.
  std::string prefix = storage::ClientSessionPrefix(absorbed_group_id);
  auto it = engine_->NewIterator(Column::kMeta, prefix, storage::PrefixSuccessor(prefix));
  for (; it->Valid(); it->Next()) {
    auto theirs = ParseSession(it->key(), it->value());
    if (!theirs.ok()) return theirs.status();
    uint64_t client = storage::ClientOfSessionKey(it->key());
    ClientSession& mine = sessions_[client];
    // A client's seqs are its own across shards: the answers are disjoint, and its watermark
    // is the higher one.
    for (auto& [seq, answer] : theirs->results) mine.results.emplace(seq, std::move(answer));
    mine.last_index = std::max(mine.last_index, theirs->last_index);
    mine.last_clock_ms = std::max(mine.last_clock_ms, theirs->last_clock_ms);
    ForgetAnswered(&mine, std::max(mine.first_incomplete_seq, theirs->first_incomplete_seq));
    StageSession(client, mine, batch);
  }
  return it->status();
}

bool KvStateMachine::Expired(const ClientSession& session) const {
  return clock_ms_ > session.last_clock_ms + session_ttl_ms_;
}

void KvStateMachine::SweepIdleSessions(storage::WriteBatch* batch) {
  if (clock_ms_ < next_sweep_ms_) return;
  next_sweep_ms_ = clock_ms_ + std::min(kSweepEveryMs, session_ttl_ms_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (Expired(it->second)) {
      batch->Delete(Column::kMeta, storage::ClientSessionKey(group_id_, it->first));
      sessions_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<std::vector<internal::CommandResult>> KvStateMachine::Apply(
    std::span<const IndexedCommand> commands, bool sync, const raftpb::ConfState* conf) {
  std::vector<internal::CommandResult> results;
  results.reserve(commands.size());
  if (commands.empty()) return results;
  storage::WriteBatch batch(*engine_);
  Overlay overlay;
  // Clients whose session changed this round: each gets its record written once, at the end.
  absl::flat_hash_set<uint64_t> touched_sessions;
  uint64_t expected = applied_index() + 1;
  for (const auto& ic : commands) {
    if (ic.index != expected) {
      return absl::InternalError(
          absl::StrCat("apply out of order: got index ", ic.index, ", expected ", expected));
    }
    ++expected;
    static const internal::Command kNoop;
    const internal::Command& cmd = ic.command ? *ic.command : kNoop;
    clock_ms_ = std::max(clock_ms_, cmd.cluster_clock_ms());
    if (cmd.client_id() == 0) {
      auto r = ApplyOne(ic.index, ic.term, cmd, &overlay, &batch);
      if (!r.ok()) return r.status();
      results.push_back(*std::move(r));
      continue;
    }
    // A client idle past the TTL (by the replicated clock, so every replica decides alike, at
    // this very command) starts afresh: its old answers are gone.
    if (auto old = sessions_.find(cmd.client_id());
        old != sessions_.end() && Expired(old->second)) {
      sessions_.erase(old);
    }
    auto& session = sessions_[cmd.client_id()];
    session.last_index = ic.index;
    session.last_clock_ms = clock_ms_;
    if (auto hit = session.results.find(cmd.seq()); hit != session.results.end()) {
      results.push_back(hit->second);  // retried command: answer as the first time
      continue;
    }
    if (cmd.seq() < session.first_incomplete_seq) {
      // The client told us it already has this answer; it cannot be waiting for it.
      internal::CommandResult stale;
      stale.set_succeeded(false);
      results.push_back(stale);
      continue;
    }
    auto r = ApplyOne(ic.index, ic.term, cmd, &overlay, &batch);
    if (!r.ok()) return r.status();
    if (r->frozen()) {
      // Not applied, and not remembered: a retry after the shard thawed must apply.
      results.push_back(*std::move(r));
      continue;
    }
    // What is remembered for a retry is the outcome, not a copy of data: a failed CAS does not
    // keep the current value (it can be large, and a client that never acknowledges would have
    // each of its records grow by it).
    internal::CommandResult remembered = *r;
    remembered.clear_current_value();
    session.results[cmd.seq()] = std::move(remembered);
    ForgetAnswered(&session, cmd.first_incomplete_seq());
    touched_sessions.insert(cmd.client_id());
    results.push_back(*std::move(r));
  }
  uint64_t last = commands.back().index;
  uint64_t last_term = commands.back().term;
  for (uint64_t client_id : touched_sessions) StageSession(client_id, sessions_[client_id], &batch);
  SweepIdleSessions(&batch);
  batch.Put(Column::kMeta, storage::AppliedIndexKey(group_id_),
            EncodeApplied(last, last_term, clock_ms_));
  if (conf) batch.Put(Column::kMeta, ConfKey(group_id_), conf->SerializeAsString());
  visible_index_.store(last, std::memory_order_release);
  if (auto s = engine_->Write(batch, sync); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    applied_index_ = last;
    applied_term_ = last_term;
  }
  if (system_observer_) {
    for (const auto& [key, value] : system_writes_) system_observer_(key, value);
  }
  system_writes_.clear();
  return results;
}

bool KvStateMachine::Owns(const internal::Command& command) const {
  if (scope_.span.start == keyspace_begin_ && scope_.span.end == keyspace_end_) return true;
  switch (command.op_case()) {
    case internal::Command::kPut:
      return DataKeyOf(command.put().key()).has_value();
    case internal::Command::kDel:
      return DataKeyOf(command.del().key()).has_value();
    case internal::Command::kCas:
      return DataKeyOf(command.cas().key()).has_value();
    default:
      return true;
  }
}

absl::StatusOr<std::optional<StoredValue>> KvStateMachine::Get(std::string_view key) const {
  auto data_key = DataKeyOf(key);
  if (!data_key) return OutsideShard();
  if (frozen_at() != 0) return Frozen();
  return ReadThrough({}, *data_key);
}

absl::Status KvStateMachine::Frozen() const {
  // Once the merge applies, the survivor takes writes for these keys: a frozen replica can no
  // longer tell whether its data is current.
  return absl::UnavailableError(
      absl::StrCat("the shard of group ", group_id_, " is frozen for a merge; retry shortly"));
}

absl::Status KvStateMachine::OutsideShard() const {
  return absl::OutOfRangeError(
      absl::StrCat("the key is not in the shard of group ", group_id_, "; retry at its shard"));
}

absl::Status KvStateMachine::Scan(std::string_view start, std::string_view end, size_t limit,
                                  size_t max_bytes, bool keys_only, std::vector<ScanItem>* out,
                                  bool* more) const {
  *more = false;
  if (scope_.keyspace.strategy == sharding::Strategy::kHash) {
    // A range of user keys is spread over every slot: ScanFrom walks slot order instead.
    return absl::InvalidArgumentError("a hash keyspace is scanned in slot order (ScanFrom)");
  }
  std::string lower = std::max(sharding::EncodeKey(scope_.keyspace, start), scope_.span.start);
  std::string upper = end.empty()
                          ? scope_.span.end
                          : std::min(sharding::EncodeKey(scope_.keyspace, end), scope_.span.end);
  std::string last;
  return ScanSpan(lower, upper, "", "", limit, max_bytes, keys_only, out, more, &last);
}

absl::Status KvStateMachine::ScanFrom(std::string_view position, std::string_view start,
                                      std::string_view end, size_t limit, size_t max_bytes,
                                      bool keys_only, std::vector<ScanItem>* out, bool* more,
                                      std::string* last_position) const {
  *more = false;
  std::string lower = std::max(std::string(position), scope_.span.start);
  return ScanSpan(lower, scope_.span.end, start, end, limit, max_bytes, keys_only, out, more,
                  last_position);
}

absl::Status KvStateMachine::ScanSpan(std::string_view lower, std::string_view upper,
                                      std::string_view start, std::string_view end, size_t limit,
                                      size_t max_bytes, bool keys_only, std::vector<ScanItem>* out,
                                      bool* more, std::string* last_position) const {
  if (frozen_at() != 0) return Frozen();
  if (lower >= upper) return absl::OkStatus();
  bool filtered = !start.empty() || !end.empty();
  // A filtered walk looks at this many keys at most per page (then it pages where it stopped).
  constexpr size_t kMaxExamined = 100000;
  size_t examined = 0;
  auto it = engine_->NewIterator(Column::kData, lower, upper);
  size_t bytes = 0;
  for (; it->Valid(); it->Next()) {
    if (out->size() >= limit || bytes >= max_bytes || examined >= kMaxExamined) {
      *more = true;
      break;
    }
    ++examined;
    auto user_key = sharding::DecodeKey(scope_.keyspace, it->key());
    if (!user_key.ok()) return absl::DataLossError("a data key outside its keyspace");
    last_position->assign(it->key());
    if (filtered && (*user_key < start || (!end.empty() && *user_key >= end))) continue;
    auto decoded = storage::DecodeVersionedValue(it->value());
    if (!decoded) return absl::DataLossError("stored value is malformed");
    ScanItem item;
    item.key.assign(*user_key);
    if (!keys_only) item.value.assign(decoded->value);
    item.version = decoded->version;
    bytes += item.key.size() + item.value.size() + 16;
    out->push_back(std::move(item));
  }
  return it->status();
}

}  // namespace kv::server
