// GroupReplica: this node's replica of one Raft group: its Raft core, log store and state
// machine, the writes and reads waiting on it, and the read levels (one place for the rules of
// every ReadConsistency). Owned by the Store; touched only by the driver thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kvstore/v1/internal.pb.h"
#include "raft/raft.h"
#include "server/driver_options.h"
#include "server/kv_state_machine.h"
#include "server/raft_log_store.h"
#include "server/replica.h"

namespace kv::server {

// Sets `d`'s voters (a joint configuration's two sets as one list) and learners from `conf`, and
// raises its conf version to the change that made `conf`.
void SetMembers(const raftpb::ConfState& conf, internal::GroupDescriptor* d);

class GroupReplica {
 public:
  using WriteDone = Replica::WriteDone;
  using ReadReady = Replica::ReadReady;

  GroupReplica(internal::GroupDescriptor descriptor, std::unique_ptr<raft::Raft> raft,
               std::unique_ptr<RaftLogStore> log_store,
               std::unique_ptr<KvStateMachine> state_machine, const DriverOptions* options);

  uint64_t id() const { return descriptor_.group_id(); }
  const internal::GroupDescriptor& descriptor() const { return descriptor_; }
  void set_descriptor(internal::GroupDescriptor d) { descriptor_ = std::move(d); }
  // Brings the descriptor's replicas and configuration version up to the Raft membership in
  // effect (after a membership change applies, a snapshot installs, or the replica opens).
  void FollowConf();
  raft::Raft& raft() { return *raft_; }
  const raft::Raft& raft() const { return *raft_; }
  KvStateMachine& state_machine() { return *sm_; }
  RaftLogStore& log_store() { return *log_store_; }

  // Named operations (driver thread).
  void Propose(internal::Command command, v1::WriteConsistency consistency, absl::Time deadline,
               WriteDone done);
  void StartRead(const ReadRequirement& req, ReadReady ready, uint64_t read_id);
  absl::StatusOr<uint64_t> ChangeMembership(const raftpb::ConfChange& cc);
  // Frozen for a merge, or a freeze is in the log not yet applied (membership must not change).
  bool FreezeInForceOrPending() const;

  // Steps of the driver's loop.
  void NoteLeaderMessage(const raftpb::Message& m, absl::Time now);
  void ApplyCommitted(const raft::Ready& rd);
  void NoteReadStates(const raft::Ready& rd);
  void ServeReads();
  // Deadlines, and ReadIndex requests that failed for want of a leader asked again.
  void OnTick(absl::Time now);
  void CompleteAllWrites();
  // A node that stopped leading answers its pending writes at once (their outcome is unknown
  // here; a retry is deduplicated) instead of letting callers wait for their deadlines.
  void ReleaseWritesOfLostLeadership();
  // Answers everything waiting with `status` (shutdown, destruction).
  void FailAll(const absl::Status& status);
  // The compaction to persist now, if the log grew past its bounds.
  std::optional<raftpb::SnapshotMeta> CompactionDue();

  bool has_waiting_work() const { return !writes_.empty() || !reads_.empty(); }
  // Ticks in a row without proposals or reads (quiescence).
  int idle_ticks = 0;

  // Counters and recent timings for status.
  absl::Time last_leader_contact = absl::InfinitePast();
  uint64_t leader_commit_seen = 0;  // the leader's commit index as of that contact
  uint64_t fsyncs = 0;
  uint64_t entries_persisted = 0;
  uint64_t synced_term = 0;
  uint64_t synced_vote = 0;
  bool conf_dirty = true;  // membership (or the shard's span) changed since the last publish
  raftpb::ConfState published_conf;
  uint64_t published_generation = ~uint64_t{0};
  std::set<uint64_t> removed;  // members seen leaving the group (see MayReceiveFrom)
  // The members of the newest descriptor the metadata gave for this group (Reconcile), and its
  // conf version: while that is newer than this replica's, they may send to it.
  std::set<uint64_t> vouched;
  uint64_t vouched_conf_version = 0;
  const std::set<uint64_t>& Vouched() const {
    static const std::set<uint64_t> none;
    return vouched_conf_version > descriptor_.epoch().conf_version() ? vouched : none;
  }
  std::set<uint64_t> gone_on;  // members that told us they host no replica of the group
  std::vector<double> fsync_ms = std::vector<double>(256, 0.0);
  std::vector<double> apply_ms = std::vector<double>(256, 0.0);
  size_t fsync_slot = 0, apply_slot = 0;
  double fsync_p99_ms = 0, apply_p99_ms = 0;  // recomputed every 16 samples
  uint64_t proposals = 0, leader_changes = 0, last_leader = 0;
  uint64_t logged_term = 0;  // the term of the last role change written to the log
  uint64_t snapshots_sent = 0, snapshots_installed = 0;
  // A snapshot received and offered to Raft, held until Raft hands it out to install.
  struct IncomingSnapshot {
    raftpb::SnapshotMeta meta;
    std::shared_ptr<ReceivedSnapshot> files;
  };
  std::optional<IncomingSnapshot> incoming_snapshot;

 private:
  struct PendingWrite {
    uint64_t term = 0;
    v1::WriteConsistency consistency = v1::WRITE_MAJORITY;
    absl::Time deadline;
    WriteDone done;
    std::optional<WriteOutcome> applied;  // WRITE_ALL: applied here, waiting for all voters
  };
  struct PendingRead {
    uint64_t index = 0;  // 0 until known
    absl::Time deadline;
    ReadReady ready;
    bool retry = false;  // ReadIndex failed for want of a leader; ask again next tick
  };
  void WaitForIndex(uint64_t index, const ReadRequirement& req, ReadReady ready, uint64_t read_id);
  uint64_t ClusterClock();

  internal::GroupDescriptor descriptor_;
  std::unique_ptr<raft::Raft> raft_;
  std::unique_ptr<RaftLogStore> log_store_;
  std::unique_ptr<KvStateMachine> sm_;
  const DriverOptions* const options_;
  std::map<uint64_t, PendingWrite> writes_;  // by log index
  std::map<uint64_t, PendingRead> reads_;    // by request id
  bool led_ = false;  // led the group at the end of the previous loop iteration
  // Cluster clock (see internal.proto): where this leadership took it up.
  uint64_t clock_term_ = 0;
  uint64_t clock_base_ms_ = 0;
  absl::Duration clock_base_at_;
};

// The node cannot continue without risking wrong data: stop at once (kill -9 semantics; the
// durable state is consistent and a restart recovers from it).
[[noreturn]] void Fatal(const std::string& what);

}  // namespace kv::server
