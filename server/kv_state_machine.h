// KvStateMachine: applies committed commands of one data group to the engine, and serves reads.
//
// Applying is deterministic and idempotent after a crash: the data, the dedup records and the
// applied index of a round are written in one WriteBatch, so after a restart the state is exactly
// that of some applied prefix of the log. Versions are log indexes.
//
// Exactly-once writes: a command carries (client_id, seq, first_incomplete_seq). The result of
// every seq >= first_incomplete_seq is remembered (in memory, and in one `meta` record per client
// rewritten once per round), so a retried command returns the first result instead of applying
// twice.
//
// Thread-safety: Apply is called by one thread at a time (the apply loop); reads may run
// concurrently from any thread and see the state after some complete round.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/v1/internal.pb.h"
#include "kvstore/v1/raft.pb.h"
#include "server/shard_scope.h"
#include "server/snapshot_sink.h"
#include "server/snapshot_source.h"
#include "storage/engine.h"

namespace kv::server {

struct IndexedCommand {
  uint64_t index = 0;
  uint64_t term = 0;
  // Empty payload: a no-op entry (e.g. a new leader's first entry); advances the applied index.
  const internal::Command* command = nullptr;
};

struct StoredValue {
  std::string value;
  uint64_t version = 0;
};

struct ScanItem {
  std::string key;
  std::string value;
  uint64_t version = 0;
};

// Shard 0 is the system keyspace: cluster settings written by SystemPutOp commands, replicated
// like data but unreachable through the client API. The metadata group's state machine owns it
// (its shard is the system shard); data groups own their shard only.
inline constexpr uint64_t kSystemShardId = 0;

class KvStateMachine {
 public:
  // Owns the whole keyspace `shard_id` (a group created before keyspaces existed, the system
  // group).
  KvStateMachine(storage::Engine* engine, uint64_t group_id, uint64_t shard_id);
  // Owns the keys of `scope`: commands and reads for other keys are refused (outside_shard).
  KvStateMachine(storage::Engine* engine, uint64_t group_id, ShardScope scope);
  bool owns_system_keyspace() const { return scope_.keyspace.id == kSystemShardId; }

  // Called (on the applying thread) with every system key written by an applied command, and
  // for every stored system key by Load(). Set before Load().
  using SystemObserver = std::function<void(const std::string& key, const std::string& value)>;
  void SetSystemObserver(SystemObserver observer) { system_observer_ = std::move(observer); }
  absl::StatusOr<std::optional<StoredValue>> GetSystem(std::string_view key) const;

  // A client silent this long by the cluster clock (internal.proto: Command.cluster_clock_ms)
  // loses its exactly-once records. Set before Load().
  void set_session_ttl(uint64_t ms) { session_ttl_ms_ = ms; }

  // Finishes a snapshot install a crash interrupted (StageInstall), then loads the applied index
  // and the dedup table. Call once before anything else.
  absl::Status Load();

  // Applies commands with consecutive indexes starting at applied_index() + 1, in one batch.
  // Returns one result per command. sync = true fsyncs the batch. `conf`, when given, is the
  // membership after these commands; it is stored with them (for snapshots).
  absl::StatusOr<std::vector<internal::CommandResult>> Apply(
      std::span<const IndexedCommand> commands, bool sync, const raftpb::ConfState* conf = nullptr);

  uint64_t applied_index() const;
  // The highest index whose data a read may already see: set before a round (or a snapshot
  // install) is written, while applied_index() moves after. A session token taken from it
  // after the data was read is never older than the data it goes with. Any thread.
  uint64_t read_token_index() const { return visible_index_.load(std::memory_order_acquire); }
  // The driver is about to write a snapshot's install batch (see read_token_index).
  void BeginInstall(uint64_t index) { visible_index_.store(index, std::memory_order_release); }
  // The cluster clock as of the applied state (apply thread only).
  uint64_t clock_ms() const { return clock_ms_; }
  uint64_t applied_term() const;

  // The group's whole state (data, dedup records) as a stream read from a consistent engine
  // snapshot, with the meta (applied index and term, membership) it corresponds to.
  absl::StatusOr<std::unique_ptr<SnapshotSource>> OpenSnapshot(raftpb::SnapshotMeta* meta) const;
  // The same stream, whole (tests).
  absl::Status BuildSnapshot(raftpb::SnapshotMeta* meta, std::string* data) const;
  // A received snapshot replaces exactly this group's data span (its records were checked as
  // they arrived, by SnapshotSink).
  absl::Status CheckSnapshot(const ReceivedSnapshot& snapshot) const;
  // Replaces the group's state with a received snapshot's: stages the install record into
  // `batch` (with the snapshot's Raft meta, so both are durable together); Load() then ingests
  // the files, writes the applied and membership records and deletes the install record. After
  // a crash in between, Load() does the same again. Call snapshot.Keep() once staged.
  void StageInstall(const raftpb::SnapshotMeta& meta, const ReceivedSnapshot& snapshot,
                    storage::WriteBatch* batch) const;

  // A replica that starts at `index` (a split child): its applied record (index, term, cluster
  // clock) and membership, staged into `batch`. Its data is already in place.
  void StageStartAt(uint64_t index, uint64_t term, uint64_t clock_ms, const raftpb::ConfState& conf,
                    storage::WriteBatch* batch) const;
  // This shard's span and generation, as its own record (ShardState).
  void StageShardState(storage::WriteBatch* batch) const;
  std::string ShardStateRecord() const;
  // Deletes everything the group keeps (data span, applied record, membership, exactly-once
  // records), staged into `batch`.
  void StageDestroy(storage::WriteBatch* batch) const;

  absl::StatusOr<std::optional<StoredValue>> Get(std::string_view key) const;
  // Up to `limit` pairs of [start, end) (empty end = unbounded) and at most ~max_bytes of data.
  // Sets *more when the scan stopped early.
  absl::Status Scan(std::string_view start, std::string_view end, size_t limit, size_t max_bytes,
                    bool keys_only, std::vector<ScanItem>* out, bool* more) const;
  // Hash keyspaces: the keys of [start, end) (empty end = unbounded) in encoded (slot) order,
  // from encoded `position` to the shard's end. *last_position is the last encoded key looked
  // at (the next page starts just after it).
  absl::Status ScanFrom(std::string_view position, std::string_view start, std::string_view end,
                        size_t limit, size_t max_bytes, bool keys_only, std::vector<ScanItem>* out,
                        bool* more, std::string* last_position) const;

  uint64_t group_id() const { return group_id_; }
  // Clients with exactly-once records (apply thread only).
  size_t session_count() const { return sessions_.size(); }
  const ShardScope& scope() const { return scope_; }
  // Whether a data command's key is in this shard's span as applied so far (always true for
  // other commands). Apply thread.
  bool Owns(const internal::Command& command) const;
  // The shard's split generation, as its own state records it (apply thread).
  uint64_t generation() const { return generation_; }
  void set_generation(uint64_t g) { generation_ = g; }

  // Stages, while a SplitOp applies at (index, term), the child replica and this shard's record
  // with its new span into the apply's batch (the store does: it owns replica records). Without
  // one, splits are refused.
  using SplitStager =
      std::function<absl::Status(const internal::SplitOp& op, uint64_t index, uint64_t term,
                                 uint64_t clock_ms, storage::WriteBatch* batch)>;
  void SetSplitStager(SplitStager stager) { split_stager_ = std::move(stager); }

  // Merges (internal.proto: FreezeOp, ThawOp, MergeOp, AbortMergeOp). The group's membership
  // at a log index (Raft's ConfAt: the same on every replica); without it, merges are refused.
  using MembersAt = std::function<raftpb::ConfState(uint64_t index)>;
  void SetMembersAt(MembersAt members_at) { members_at_ = std::move(members_at); }
  // Stages, while a MergeOp applies at `index` on the survivor, the retirement of this node's
  // replica of the absorbed shard (the store does). An error stops the node: every other
  // replica absorbs its replica here, so one that cannot must not go on.
  using MergeStager = std::function<absl::Status(const internal::MergeOp& op, uint64_t index,
                                                 storage::WriteBatch* batch)>;
  void SetMergeStager(MergeStager stager) { merge_stager_ = std::move(stager); }
  // A range keyspace's shard (the only kind that merges).
  bool Mergeable() const;
  // The freeze in force: its index (0: not frozen) and the shard it merges into. Any thread.
  uint64_t frozen_at() const { return frozen_at_.load(std::memory_order_acquire); }
  uint64_t frozen_into() const { return frozen_into_; }
  // The merges this shard settled as a survivor, newest last (apply thread).
  const std::vector<internal::ShardState::SettledMerge>& settled() const { return settled_; }
  // Retiring this replica after a merge: what StageDestroy deletes but the data span, which
  // now belongs to the survivor.
  void StageRetire(storage::WriteBatch* batch) const;

 private:
  struct ClientSession {
    // Ordered, so that answered seqs (a prefix) are dropped as a range.
    std::map<uint64_t, internal::CommandResult> results;
    uint64_t first_incomplete_seq = 0;
    uint64_t last_index = 0;
    uint64_t last_clock_ms = 0;  // replicated clock at the client's latest command
  };
  // Overlay of keys written earlier in the same round (the batch is not readable until written).
  absl::Status FinishInstall();
  absl::Status ScanSpan(std::string_view lower, std::string_view upper, std::string_view start,
                        std::string_view end, size_t limit, size_t max_bytes, bool keys_only,
                        std::vector<ScanItem>* out, bool* more, std::string* last_position) const;
  using Overlay = absl::flat_hash_map<std::string, std::optional<StoredValue>>;

  // Metadata group: descriptors for new groups, with ids from the allocator (and, for a
  // keyspace's shards, their spans moved to `keyspace_id`). Returns the first id.
  // Metadata group: `count` ids from the group id allocator; returns the first.
  absl::StatusOr<uint64_t> TakeGroupIds(uint64_t index, uint64_t count, Overlay* overlay,
                                        storage::WriteBatch* batch);
  absl::StatusOr<uint64_t> RecordNewGroups(uint64_t index,
                                           std::vector<internal::GroupDescriptor> groups,
                                           std::optional<uint64_t> keyspace_id, Overlay* overlay,
                                           storage::WriteBatch* batch);
  absl::StatusOr<internal::CommandResult> ApplyDropKeyspace(uint64_t index,
                                                            const internal::DropKeyspaceOp& op,
                                                            Overlay* overlay,
                                                            storage::WriteBatch* batch);
  absl::StatusOr<internal::CommandResult> ApplyCreateKeyspace(uint64_t index,
                                                              const internal::CreateKeyspaceOp& op,
                                                              Overlay* overlay,
                                                              storage::WriteBatch* batch);
  // The data key of a user key of this shard; nullopt when the key is not in the shard.
  std::optional<std::string> DataKeyOf(std::string_view user_key) const;
  absl::Status OutsideShard() const;
  // Reads of a frozen shard (see frozen_at) are refused with this.
  absl::Status Frozen() const;
  absl::StatusOr<std::optional<StoredValue>> ReadThrough(const Overlay& overlay,
                                                         const std::string& data_key) const;
  absl::StatusOr<internal::CommandResult> ApplyOne(uint64_t index, uint64_t term,
                                                   const internal::Command& cmd, Overlay* overlay,
                                                   storage::WriteBatch* batch);
  // Writes a system key in this round; the observer hears of it once the round is written.
  void WriteSystem(uint64_t index, const std::string& key, const std::string& value,
                   Overlay* overlay, storage::WriteBatch* batch);
  // Drops answers the client has acknowledged (and the oldest past kMaxAnswersPerSession).
  void ForgetAnswered(ClientSession* session, uint64_t first_incomplete);
  void StageSession(uint64_t client_id, const ClientSession& session,
                    storage::WriteBatch* batch) const;
  void StageSessionOf(uint64_t group_id, uint64_t client_id, const ClientSession& session,
                      storage::WriteBatch* batch) const;
  absl::StatusOr<internal::CommandResult> ApplySplit(uint64_t index, uint64_t term,
                                                     const internal::SplitOp& op,
                                                     storage::WriteBatch* batch);
  absl::StatusOr<internal::CommandResult> ApplyFreeze(uint64_t index, const internal::FreezeOp& op,
                                                      storage::WriteBatch* batch);
  absl::StatusOr<internal::CommandResult> ApplyThaw(const internal::ThawOp& op,
                                                    storage::WriteBatch* batch);
  absl::StatusOr<internal::CommandResult> ApplyMerge(uint64_t index, const internal::MergeOp& op,
                                                     storage::WriteBatch* batch);
  absl::StatusOr<internal::CommandResult> ApplyAbortMerge(const internal::AbortMergeOp& op,
                                                          storage::WriteBatch* batch);
  static absl::StatusOr<ClientSession> ParseSession(std::string_view key, std::string_view value);
  // Whether the membership at `index` is exactly `voters`: no learners, not joint.
  bool MembersAre(uint64_t index, const google::protobuf::RepeatedField<uint64_t>& voters) const;
  // The settled outcome of a merge of (group, freeze index), if it was settled here.
  const internal::ShardState::SettledMerge* Settled(uint64_t absorbed, uint64_t freeze_index) const;
  void Settle(uint64_t absorbed, uint64_t freeze_index, bool merged);
  // The survivor takes the absorbed shard's exactly-once records (from its durable records).
  absl::Status TakeSessionsOf(uint64_t absorbed_group_id, storage::WriteBatch* batch);
  bool Expired(const ClientSession& session) const;
  void SweepIdleSessions(storage::WriteBatch* batch);

  storage::Engine* const engine_;
  const uint64_t group_id_;
  ShardScope scope_;  // shrinks when the shard splits (apply thread)
  // The whole of its keyspace, encoded (a shard that spans it owns every key without encoding one).
  const std::string keyspace_begin_, keyspace_end_;
  uint64_t generation_ = 1;
  SplitStager split_stager_;
  MembersAt members_at_;
  MergeStager merge_stager_;
  std::atomic<uint64_t> frozen_at_{0};
  uint64_t frozen_into_ = 0;
  std::vector<internal::ShardState::SettledMerge> settled_;  // newest last, bounded
  SystemObserver system_observer_;

  mutable absl::Mutex mu_;
  uint64_t applied_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t applied_term_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> visible_index_{0};
  // Touched only by the apply thread.
  absl::flat_hash_map<uint64_t, ClientSession> sessions_;
  // The replicated clock: the latest proposal time (Unix ms) among applied commands.
  uint64_t clock_ms_ = 0;
  uint64_t next_sweep_ms_ = 0;
  uint64_t session_ttl_ms_ = 600'000;
  std::vector<std::pair<std::string, std::string>> system_writes_;  // this round's (apply thread)
};

}  // namespace kv::server
