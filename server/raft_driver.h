// RaftDriver: the one loop per node that drives every Raft group hosted here.
//
// Each iteration: take queued inputs (proposals, peer messages, reads, admin calls), tick the
// groups that are awake, then collect the Ready of every group that has work (a ready set, not a
// scan of all groups) and carry out raft.h's durability contract once for all of them: one
// WriteBatch, one fsync (group commit); then send messages, apply committed entries, complete
// proposals and reads, and Advance. Nothing per request gets a thread or an fsync of its own.
//
// Idle groups go quiet (raft.h: Quiesce) and cost nothing per tick; one liveness beat per peer
// node (not per group) lets a quiet follower notice that its leader's node is gone.
//
// Replicas live in the Store (created and destroyed while the node runs); what other threads
// may read about them is on the StatusBoard. Public methods are thread-safe and never block on
// the loop; results arrive by callback, run on the driver thread (callbacks must be quick and
// must not call back into the driver synchronously).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvstore/v1/internal.pb.h"
#include "raft/raft.h"
#include "server/driver_options.h"
#include "server/group_replica.h"
#include "server/message_sink.h"
#include "server/node_liveness.h"
#include "server/snapshot_delegation.h"
#include "server/status_board.h"
#include "server/store.h"
#include "storage/engine.h"

namespace kv::server {

// Liveness beats travel as Raft heartbeats addressed to this pseudo-group.
inline constexpr uint64_t kNodeLivenessGroup = UINT64_MAX;

// Node-wide counts for metrics (any thread).
struct DriverCounters {
  uint64_t groups = 0;
  uint64_t quiesced = 0;
  uint64_t messages_sent = 0;
  uint64_t beats_sent = 0;
  // Snapshots this node streamed as a leader, asked another replica to stream (delegated), and
  // streamed on another leader's behalf.
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_delegated = 0;
  uint64_t snapshots_sent_for_leader = 0;
};

class RaftDriver {
 public:
  RaftDriver(storage::Engine* engine, DriverOptions options, Store::StateMachineFactory factory);
  ~RaftDriver();

  void SetTransport(MessageSink* transport) { transport_ = transport; }
  // Before Start: reopens this node's replicas, then opens (or bootstraps) each of `first`
  // (group id, shard id): the metadata group and the default data group.
  absl::Status Open(const std::vector<std::pair<uint64_t, uint64_t>>& first);
  // The state machine of a group opened by Open (valid until Stop).
  KvStateMachine* StateMachineOf(uint64_t group_id);
  // The descriptor a replica here was created from (driver thread, or the simulation).
  std::optional<internal::GroupDescriptor> DescriptorOf(uint64_t group_id);
  const storage::Engine* engine() const { return engine_; }
  void Start();
  void Stop();
  // Without Start (the node simulation): one loop iteration now, after `due_ticks` ticks.
  void RunOnce(int due_ticks);
  // A simulated crash stopped this driver (DriverOptions::crash_here); only destruction is left.
  bool crashed() const { return crashed_; }

  // Named operations on a group.
  using WriteDone = GroupReplica::WriteDone;
  void Propose(uint64_t group_id, internal::Command command, v1::WriteConsistency consistency,
               absl::Time deadline, WriteDone done);
  void Read(uint64_t group_id, const ReadRequirement& requirement, GroupReplica::ReadReady ready);
  // Proposes a membership change; `done` gets its log index (0: already in effect).
  void ChangeMembership(uint64_t group_id, raftpb::ConfChange cc,
                        std::function<void(absl::StatusOr<uint64_t>)> done);
  void TransferLeadership(uint64_t group_id, uint64_t to);
  // `done(OK)` once this node's replica applied `index` (DEADLINE_EXCEEDED at `deadline`).
  void WaitForApplied(uint64_t group_id, uint64_t index, absl::Time deadline,
                      GroupReplica::ReadReady done);
  // Creates this node's replica of a group, or destroys it (see Store).
  void CreateGroup(internal::GroupDescriptor descriptor, ReplicaOrigin origin,
                   std::function<void(absl::Status)> done);
  void DestroyGroup(uint64_t group_id, std::function<void(absl::Status)> done);
  // The metadata group applied a descriptor (nullopt: the group was removed): host the group
  // here when the descriptor names this node, destroy the replica when it no longer does.
  void Reconcile(uint64_t group_id, std::optional<internal::GroupDescriptor> descriptor);

  // Messages from peer `from` (authenticated by the transport; `certified`: by a certificate
  // that names it, not only a shared peer token). Only messages from `from`, to this node, of a
  // group that MayReceiveFrom `from` reach Raft; a message for a group not hosted here is
  // answered with MSG_GROUP_UNKNOWN; snapshots only arrive through DeliverSnapshot.
  // `client_address`: where clients reach `from`.
  void Deliver(uint64_t from, bool certified, std::string client_address,
               std::vector<raftpb::Message> messages);
  // A whole snapshot streamed by `from`: its data is checked before Raft sees the message.
  void DeliverSnapshot(uint64_t from, bool certified, raftpb::Message message,
                       std::unique_ptr<ReceivedSnapshot> snapshot);
  // Where the peer service receives a snapshot stream of `group_id` from `from` (any thread).
  absl::StatusOr<std::unique_ptr<SnapshotSink>> OpenSnapshotSink(uint64_t group_id,
                                                                 uint64_t from) const;
  // Counts a peer call refused before it reached the driver (metrics). Any thread.
  void NotePeerRefused() { peer_refused_.fetch_add(1, std::memory_order_relaxed); }

  // What other threads may know (see StatusBoard).
  const StatusBoard& board() const { return board_; }
  GroupStatus Status(uint64_t group_id) const { return board_.Status(group_id); }
  bool IsLeader(uint64_t group_id) const { return board_.IsLeader(group_id); }
  uint64_t LeaderId(uint64_t group_id) const { return board_.LeaderId(group_id); }
  std::string LeaderAddress(uint64_t group_id) const { return board_.LeaderAddress(group_id); }
  std::string AddressOf(uint64_t node_id) const { return board_.AddressOf(node_id); }
  std::string ClientAddressOf(uint64_t node_id) const { return board_.ClientAddressOf(node_id); }
  bool IsMemberOf(uint64_t group_id, uint64_t node) const {
    return board_.IsMemberOf(group_id, node);
  }
  bool MayReceiveFrom(uint64_t group_id, uint64_t node, bool certified) const {
    return board_.MayReceiveFrom(group_id, node, certified);
  }
  DriverCounters counters() const;
  // The descriptors of the keyspace shards this node hosts (`led_only`: leads), as their
  // replicas record them (the authority after a split); `done` runs on the driver thread.
  void ShardDescriptors(bool led_only,
                        std::function<void(std::vector<internal::GroupDescriptor>)> done);
  // What merges need to know of the keyspace shards this node hosts: their freeze, and the
  // merges a survivor settled; `done` runs on the driver thread.
  struct MergeState {
    uint64_t group_id = 0;
    bool leads = false;
    bool mergeable = false;  // a range keyspace's shard
    uint64_t keyspace_id = 0;
    std::string span_start, span_end;
    uint64_t generation = 0;
    uint64_t applied = 0;
    std::vector<uint64_t> voters;  // sorted; empty when there are learners or it is joint
    uint64_t frozen_at = 0, frozen_into = 0;
    std::vector<uint64_t> merged;  // absorbed groups of merges settled here
  };
  void MergeStates(std::function<void(std::vector<MergeState>)> done);
  uint64_t node_id() const { return options_.node_id; }
  // How long since this node last heard from peer `node` (as of the last tick; any thread).
  // InfiniteDuration() when never heard from, or not a peer (shares no group with this node).
  absl::Duration SilenceOf(uint64_t node) const;

  // A backup of one group (AdminService::BackupShard): after a linearizable read passed here,
  // a snapshot of the group's state with its Raft meta and its descriptor as the replica
  // records it, all taken at once on the driver thread; `done` runs there.
  struct BackupSource {
    std::unique_ptr<SnapshotSource> source;
    raftpb::SnapshotMeta meta;
    internal::GroupDescriptor descriptor;
  };
  void OpenBackup(uint64_t group_id, absl::Time deadline,
                  std::function<void(absl::StatusOr<BackupSource>)> done);

 private:
  void Enqueue(std::function<void()> task);
  void Loop();
  void Iterate(int due_ticks, std::vector<std::function<void()>>& tasks);
  const DriverClock& clock() const { return *options_.clock; }
  // Liveness runs on monotonic time: a wall clock stepped back must not keep a dead node live.
  absl::Time LivenessNow() const { return absl::UnixEpoch() + clock().Monotonic(); }
  void TickAwakeGroups(int due);
  void BeatAndWatchPeers(absl::Time now);
  absl::Status CreateNow(const internal::GroupDescriptor& descriptor, const ReplicaOrigin& origin);
  absl::Status DestroyNow(uint64_t group_id);
  void HandleReadies();
  bool CrashesAt(DriverOptions::CrashPoint point);
  void FinishIteration();
  void SendSnapshots(GroupReplica& g, const std::vector<uint64_t>& peers);
  // Delegated snapshots (snapshot_delegation.h): streams this replica's snapshot to another in
  // the leader's name, as the leader asked in `request`; and, on the leader, a delegate's report.
  void StreamSnapshotFor(GroupReplica& g, const raftpb::Message& request);
  void DelegatedSnapshotDone(GroupReplica& g, const raftpb::Message& status);
  void ExpireDelegations();
  // A split of `parent` applied here and created `child_id`: wake it, publish both, and campaign
  // when this node led the parent.
  // Retires the frozen replicas whose span a snapshot of `g` (a merge's survivor) covered.
  std::vector<uint64_t> RetireCoveredBy(GroupReplica& g);
  // Drops what the driver keeps about a group gone from this node.
  void Forget(uint64_t group_id);
  void AdoptSplitChild(GroupReplica& parent, uint64_t child_id);
  void Compact(GroupReplica& g);
  // Answers the log engine's requests to rewrite (or drop) groups whose old records keep its
  // oldest segment on disk. Only between rounds, when every group's entries are persisted.
  void RewriteOldLogs();
  bool AcceptFrom(GroupReplica& g, uint64_t from, bool certified, const raftpb::Message& m,
                  bool from_snapshot_stream) const;
  void AnswerUnknownGroup(uint64_t from, const raftpb::Message& m, absl::Time now);
  void NoteRefused(uint64_t from, uint64_t group_id, absl::Time now);
  void Publish(GroupReplica& g);
  void ColocateLeadership();
  void RecomputePeers();
  void SendMessages(std::vector<raftpb::Message> messages);
  // Marks a group as having (possibly) work this iteration.
  void Touch(uint64_t group_id) { touched_.insert(group_id); }
  GroupReplica* Find(uint64_t group_id) { return store_.Find(group_id); }

  storage::Engine* const engine_;
  static DriverOptions WithClock(DriverOptions options) {
    if (!options.clock) options.clock = &DriverClock::Real();
    return options;
  }
  const DriverOptions options_;
  MessageSink* transport_ = nullptr;
  StatusBoard board_;
  Store store_;  // touched by the loop thread only (and by Open, before Start)
  NodeLiveness liveness_;

  // Loop thread only.
  std::set<uint64_t> touched_;  // groups with possible work in this iteration
  std::set<uint64_t> awake_;    // groups ticked: not quiet, or with waiting writes and reads
  std::set<uint64_t> peers_;    // every other node sharing a group with this one
  bool peers_dirty_ = true;
  uint64_t ticks_ = 0;
  bool crashed_ = false;
  uint64_t next_read_id_ = 1;
  uint64_t refused_messages_ = 0;  // peer messages dropped by AcceptFrom
  absl::Time last_refusal_logged_ = absl::InfinitePast();
  std::map<std::pair<uint64_t, uint64_t>, absl::Time> unknown_answered_;  // (node, group)
  SnapshotDelegations delegations_;                                       // as a leader
  std::set<std::pair<uint64_t, uint64_t>> streaming_for_;  // as a delegate: (group, target)

  std::atomic<uint64_t> peer_refused_{0};  // calls refused by the peer service
  std::atomic<uint64_t> group_count_{0}, quiesced_count_{0};
  std::atomic<uint64_t> messages_sent_{0}, beats_sent_{0};
  std::atomic<uint64_t> snapshots_sent_{0}, snapshots_delegated_{0}, snapshots_sent_for_leader_{0};

  // What SilenceOf answers: each peer's silence as of `silence_at_` (copied once per tick).
  mutable absl::Mutex silence_mu_;
  std::map<uint64_t, absl::Duration> silence_ ABSL_GUARDED_BY(silence_mu_);
  absl::Time silence_at_ ABSL_GUARDED_BY(silence_mu_);

  absl::Mutex inbox_mu_;
  std::vector<std::function<void()>> inbox_ ABSL_GUARDED_BY(inbox_mu_);
  bool stopping_ ABSL_GUARDED_BY(inbox_mu_) = false;
  std::thread thread_;
};

}  // namespace kv::server
