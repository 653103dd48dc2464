// RaftDriver: the one loop per node that runs every Raft group hosted here.
//
// Each iteration: take queued inputs (proposals, peer messages, reads, admin calls), step them
// into the groups, tick on schedule, then collect every group's Ready and carry out raft.h's
// durability contract once for all of them: one WriteBatch, one fsync (group commit); then send
// messages, apply committed entries (data and applied index in one batch), complete proposals
// and reads, and Advance. Nothing per request gets a thread or an fsync of its own.
//
// Public methods are thread-safe and never block on the loop; results arrive by callback, run on
// the driver thread (callbacks must be quick and must not call back into the driver
// synchronously).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvstore/v1/admin.pb.h"
#include "raft/raft.h"
#include "server/kv_state_machine.h"
#include "server/raft_log_store.h"
#include "server/replica.h"
#include "storage/engine.h"

namespace kv::server {

class PeerTransport;

struct DriverOptions {
  uint64_t node_id = 0;
  bool sync = true;
  absl::Duration tick = absl::Milliseconds(100);
  int election_tick = 10;
  int heartbeat_tick = 1;
  int lease_margin_ticks = 2;
  // Voters of a new group (bootstrap); empty with `join` (wait to be added by the cluster).
  std::map<uint64_t, std::string> initial_voters;
  bool join = false;
  // Compact the log when this many applied entries sit behind it, keeping `retain` of them for
  // followers that lag a little (the rest catch up by snapshot).
  uint64_t compact_threshold = 20000;
  uint64_t compact_retain = 5000;
  // ... or when the applied entries behind the log's start hold this many payload bytes (then
  // everything applied goes: a few large entries must not pin gigabytes).
  uint64_t compact_bytes = 64ull << 20;
  // This node's addresses: where clients reach it (told to peers with every batch) and where
  // peers do (its membership address when --force-new-cluster rewrites the membership).
  std::string client_address;
  std::string peer_address;
  // Make this node the only voter of every group (see CONF_FORCE_NEW_CLUSTER).
  bool force_new_cluster = false;
  // When set, the leader of this group hands that group's leadership to the leader of
  // `colocate_with` (keeps the metadata group led where the data group is).
  uint64_t colocate_group = UINT64_MAX;
  uint64_t colocate_with = UINT64_MAX;
  // Observers (metrics): duration of each synced log write (entries + hard state of every group,
  // the "append") and of each apply batch, in seconds. Called on the driver thread.
  std::function<void(double)> on_log_append;
  std::function<void(double)> on_apply;
};

// What the driver publishes about a group after each iteration (read by any thread).
struct GroupStatus {
  uint64_t group_id = 0;
  raft::Role role = raft::Role::kFollower;
  uint64_t term = 0;
  uint64_t leader_id = 0;
  std::string leader_address;
  uint64_t commit = 0;
  uint64_t applied = 0;
  uint64_t first_index = 0;
  uint64_t last_index = 0;
  raftpb::ConfState conf;
  std::set<uint64_t> removed;  // members this node saw leave the group
  std::vector<raft::PeerStatus> peers;
  uint64_t fsyncs = 0;
  uint64_t entries_persisted = 0;
  double fsync_p99_ms = 0;      // over the last 256 synced writes
  double apply_p99_ms = 0;      // over the last 256 apply batches
  double heartbeat_age_ms = 0;  // follower: since the leader was last heard from
  uint64_t proposals = 0;
  uint64_t leader_changes = 0;
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_installed = 0;
  // Node-wide: peer calls and messages refused (unauthenticated, not a member, malformed).
  uint64_t peer_refused = 0;
};

class RaftDriver {
 public:
  RaftDriver(storage::Engine* engine, DriverOptions options);
  ~RaftDriver();

  void SetTransport(PeerTransport* transport) { transport_ = transport; }
  // Loads (or bootstraps) a group. Call before Start.
  absl::Status AddGroup(uint64_t group_id, KvStateMachine* state_machine);
  void Start();
  void Stop();

  using WriteDone = Replica::WriteDone;
  void Propose(uint64_t group_id, internal::Command command, v1::WriteConsistency consistency,
               absl::Time deadline, WriteDone done);
  void Read(uint64_t group_id, const ReadRequirement& requirement,
            std::function<void(absl::Status)> ready);
  // Messages from peer `from` (authenticated by the transport; `certified`: by a certificate
  // that names it, not only a shared peer token). Only messages from `from`, to this node, of a
  // group that MayReceiveFrom `from` reach Raft; snapshots only arrive through
  // DeliverSnapshot. `client_address`: where clients reach `from`.
  void Deliver(uint64_t from, bool certified, std::string client_address,
               std::vector<raftpb::Message> messages);
  // A whole snapshot streamed by `from`: its data is checked before Raft sees the message.
  void DeliverSnapshot(uint64_t from, bool certified, raftpb::Message message, std::string data);
  // Is `node` a voter or learner of the group (as last published)? Any thread.
  bool IsMemberOf(uint64_t group_id, uint64_t node) const;
  // May `node` send this group traffic? A member may (as this node's configuration knows it);
  // so may any authenticated peer while the group has no members yet (a node started with
  // --join). A node whose certificate names it may also when this node has not seen it as a
  // member yet (it lags behind the change that added it), unless it saw it removed. False for
  // a group not hosted here. Any thread.
  bool MayReceiveFrom(uint64_t group_id, uint64_t node, bool certified) const;
  // Counts a peer call refused before it reached the driver (metrics). Any thread.
  void NotePeerRefused() { peer_refused_.fetch_add(1, std::memory_order_relaxed); }
  // Where clients reach `node` ("" until heard from). Any thread.
  std::string ClientAddressOf(uint64_t node_id) const;
  // Runs `fn` on the driver thread with the group's Raft (nullptr if no such group).
  void RunOnLoop(uint64_t group_id, std::function<void(raft::Raft*)> fn);

  GroupStatus Status(uint64_t group_id) const;
  // Cheap per-request views of a group (no copy of the full status).
  bool IsLeader(uint64_t group_id) const;
  uint64_t LeaderId(uint64_t group_id) const;
  std::string LeaderAddress(uint64_t group_id) const;
  // Address of a member as the group knows it ("" when unknown); any thread.
  std::string AddressOf(uint64_t node_id) const;
  uint64_t node_id() const { return options_.node_id; }

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
    std::function<void(absl::Status)> ready;
    bool retry = false;  // ReadIndex failed for want of a leader; ask again next tick
  };
  struct Group {
    uint64_t id = 0;
    std::unique_ptr<raft::Raft> raft;
    KvStateMachine* sm = nullptr;
    std::unique_ptr<RaftLogStore> log_store;
    std::map<uint64_t, PendingWrite> writes;  // by log index
    std::map<uint64_t, PendingRead> reads;    // by request id
    std::optional<std::pair<raftpb::SnapshotMeta, std::string>> incoming_snapshot;
    absl::Time last_leader_contact = absl::InfinitePast();
    uint64_t leader_commit_seen = 0;  // the leader's commit index as of that contact
    uint64_t fsyncs = 0;
    uint64_t entries_persisted = 0;
    uint64_t synced_term = 0;
    bool led = false;  // led the group at the end of the previous loop iteration
    uint64_t synced_vote = 0;
    // Membership changed (conf-change entry or snapshot) since the last Publish.
    bool conf_dirty = true;
    std::set<uint64_t> removed;  // members seen leaving the group (see MayReceiveFrom)
    std::vector<double> fsync_ms = std::vector<double>(256, 0.0);
    std::vector<double> apply_ms = std::vector<double>(256, 0.0);
    size_t fsync_slot = 0, apply_slot = 0;
    uint64_t proposals = 0, leader_changes = 0, last_leader = 0;
    uint64_t logged_term = 0;  // the term of the last role change written to the log
    uint64_t snapshots_sent = 0, snapshots_installed = 0;
    // Cluster clock (see internal.proto): where this leadership took it up.
    uint64_t clock_term = 0;
    uint64_t clock_base_ms = 0;
    std::chrono::steady_clock::time_point clock_base_at;
  };

  void Enqueue(std::function<void()> task);
  void Loop();
  void HandleReadies();
  void ApplyCommitted(Group& g, const raft::Ready& rd);
  void ServeReads(Group& g);
  void CheckDeadlines(Group& g, absl::Time now);
  void CompleteAllWrites(Group& g);
  // A node that stopped leading answers its pending writes at once (their outcome is unknown
  // here; a retry is deduplicated) instead of letting callers wait for their deadlines.
  void ReleaseWritesOfLostLeadership(Group& g);
  void MaybeCompact(Group& g);
  // Appends a CONF_FORCE_NEW_CLUSTER entry to a loaded group's log (see --force-new-cluster).
  absl::Status ForceNewCluster(uint64_t group_id, PersistedRaftState* state);
  bool AcceptFrom(const Group& g, uint64_t from, bool certified, const raftpb::Message& m,
                  bool from_snapshot_stream) const;
  uint64_t ClusterClock(Group& g);
  void StartRead(Group& g, const ReadRequirement& req, std::function<void(absl::Status)> ready);
  void Publish();
  void ColocateLeadership();
  Group* FindGroup(uint64_t id);

  storage::Engine* const engine_;
  const DriverOptions options_;
  PeerTransport* transport_ = nullptr;
  std::map<uint64_t, std::unique_ptr<Group>> groups_;  // touched by the loop thread only
  uint64_t next_read_id_ = 1;
  uint64_t refused_messages_ = 0;          // peer messages dropped by AcceptFrom (driver thread)
  std::atomic<uint64_t> peer_refused_{0};  // calls refused by the peer service
  absl::Time last_refusal_logged_ = absl::InfinitePast();

  absl::Mutex inbox_mu_;
  std::vector<std::function<void()>> inbox_ ABSL_GUARDED_BY(inbox_mu_);
  bool stopping_ ABSL_GUARDED_BY(inbox_mu_) = false;
  std::thread thread_;

  struct LeaderHint {
    std::atomic<bool> is_leader{false};
    std::atomic<uint64_t> leader_id{0};
    std::atomic<bool> address_known{false};
    mutable absl::Mutex mu;
    std::string address ABSL_GUARDED_BY(mu);
  };
  // Created by AddGroup (before Start); the map itself never changes afterwards.
  std::map<uint64_t, std::unique_ptr<LeaderHint>> hints_;
  const LeaderHint* Hint(uint64_t group_id) const;

  mutable absl::Mutex status_mu_;
  std::map<uint64_t, GroupStatus> status_ ABSL_GUARDED_BY(status_mu_);
  std::map<uint64_t, std::string> addresses_ ABSL_GUARDED_BY(status_mu_);
  std::map<uint64_t, std::string> client_addresses_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace kv::server
