// Raft: one Raft group's consensus protocol as a deterministic state machine (the etcd-raft
// idea). It has no threads, sockets, clocks, files or global randomness: the caller feeds it
// ticks, peer messages and proposals, and collects a Ready holding what to persist, what to send
// and what is committed. Same inputs and seed, same outputs.
//
// Durability contract, carried out by the caller for each Ready, in this order:
//   1. persist hard_state, snapshot (if any; install its data first) and entries (replacing any
//      persisted entries at or above entries[0].index) — durably, fsynced;
//   2. send messages (votes and acknowledgements must never precede the state they promise);
//   3. apply committed entries in order (they are always already persisted locally);
//   4. call Advance(ready). No Step/Tick/Propose between GetReady and Advance.
//
// Implements: elections with randomized timeouts, pre-vote and check-quorum; replication with the
// current-term commit rule, term-skipping conflict back-off, batching and bounded pipelining;
// snapshots and compaction; ReadIndex reads (batched per heartbeat round) and a tick-based leader
// lease; leadership transfer (TimeoutNow); membership changes: single-node ones with learners,
// and joint consensus (raft/confchange.h) for replacing voters in one safe step.
// Not thread-safe: one owner (the driver thread) calls it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/v1/raft.pb.h"
#include "raft/progress.h"
#include "raft/quorum.h"
#include "raft/raft_log.h"

namespace kv::raft {

enum class Role { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role role);

struct Config {
  uint64_t id = 0;
  uint64_t group_id = 0;
  // In ticks. Election timeouts are drawn from [election_tick, 2 * election_tick).
  int election_tick = 10;
  int heartbeat_tick = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  // Appends in flight per follower in replicate state (pipelining bound).
  int max_inflight = 64;
  size_t max_append_bytes = 1 << 20;
  // Committed entries handed out per Ready, at most about this many bytes.
  size_t max_committed_bytes = 8 << 20;
  // A leader refuses proposals (RESOURCE_EXHAUSTED) while the entries it appended in its term
  // and has not yet committed hold more than this many payload bytes: a leader cut off from its
  // quorum must not grow its log without bound. One proposal is always accepted when nothing is
  // uncommitted, whatever its size. 0: no limit.
  size_t max_uncommitted_bytes = 0;
  // The lease lasts election_tick - lease_margin_ticks after the heartbeat that confirmed it was
  // sent; the margin absorbs clock-rate drift between nodes.
  int lease_margin_ticks = 2;
  uint64_t seed = 1;
};

// A read whose index is known: serve it once the state machine applied `index`.
struct ReadState {
  uint64_t request_id = 0;
  uint64_t index = 0;
};

struct Ready {
  std::optional<raftpb::HardState> hard_state;
  // A snapshot received from the leader: install its data, then persist meta.
  std::optional<raftpb::SnapshotMeta> snapshot;
  std::vector<raftpb::Entry> entries;
  // When non-zero, persisted entries at or above this index were replaced: delete them first.
  uint64_t truncate_from = 0;
  std::vector<raftpb::Message> messages;
  std::vector<raftpb::Entry> committed;
  // Membership after the committed entries, when they contain a conf change (persist with them).
  std::optional<raftpb::ConfState> conf_state;
  std::vector<ReadState> read_states;
  // Read requests that cannot be served (no leader); the caller fails them.
  std::vector<uint64_t> failed_reads;
  // Followers that need a snapshot (leader only): the caller streams one and calls
  // ReportSnapshot.
  std::vector<uint64_t> snapshot_requests;

  bool empty() const {
    return !hard_state && !snapshot && entries.empty() && messages.empty() && committed.empty() &&
           read_states.empty() && failed_reads.empty() && snapshot_requests.empty();
  }
};

// What a node knows of one peer when it leads (for status and WRITE_ALL).
struct PeerStatus {
  uint64_t id = 0;
  bool voter = false;
  uint64_t match = 0;
  uint64_t next = 0;
  uint64_t applied = 0;
  bool recent_active = false;
  const char* state = "";
};

// The initial persistent state of a new group, identical on each of its first voters: entry 1
// (term 1) is a CONF_BOOTSTRAP carrying the voters, so that nodes joining later learn the
// membership from the log like every other change.
struct BootstrapState {
  raftpb::HardState hard_state;
  raftpb::SnapshotMeta snapshot;
  std::vector<raftpb::Entry> entries;
};
BootstrapState Bootstrap(const raftpb::ConfState& voters);

class Raft {
 public:
  // REQUIRES: config.id != 0.
  explicit Raft(const Config& config);

  // Restores persisted state on start-up (or bootstraps a new group when everything is empty and
  // `snapshot.conf` lists the initial voters). `applied` is the state machine's applied index;
  // committed entries above it are handed out again.
  void Restore(const raftpb::HardState& hard_state, const raftpb::SnapshotMeta& snapshot,
               std::vector<raftpb::Entry> entries, uint64_t applied);

  void Tick();
  // A message from a peer (or a local read index request). Messages for other groups or from
  // unknown terms are handled as Raft prescribes; nothing is ever an error.
  void Step(const raftpb::Message& m);
  // Appends a command; returns its index and term. FAILED_PRECONDITION when not leader or
  // while leadership is being transferred.
  absl::StatusOr<std::pair<uint64_t, uint64_t>> Propose(std::string data);
  // Validates and appends a membership change (one at a time).
  absl::StatusOr<std::pair<uint64_t, uint64_t>> ProposeConfChange(const raftpb::ConfChange& cc);
  // Asks for a linearizable read index. The answer arrives as a ReadState (or a failed read).
  void ReadIndex(uint64_t request_id);
  // Leader only: is the lease valid now? When true, commit() is safe to read at.
  bool HasLease() const;
  void TransferLeadership(uint64_t to);
  // Starts an election at once, as a leadership transfer would (no pre-vote, past any lease): a
  // split child on the node that led its parent, whose replicas all start leaderless together.
  void CampaignNow();
  // Leader only: ticks left on the lease (0 without one).
  uint64_t LeaseTicksLeft() const;
  // A split child about to CampaignNow on the node whose parent replica led with a lease: if it
  // wins the very next term, it starts with `ticks` of lease instead of none. The caller bounds
  // `ticks` by the parent's lease and by an election timeout less the margin from the moment the
  // parent applied the split: no other replica of the child exists before it applied the same
  // split, and none can campaign sooner than an election timeout after that.
  void InheritLease(uint64_t ticks);
  // A replica made empty for a split child (its parent replica here skipped the split by a
  // snapshot): every other replica of the child starts from the split entry at `index`, and
  // none of the child's later entries was ever committed with this replica's help. So, until it
  // holds the group's state, it may vote for a candidate whose log reaches `index`; without a
  // floor an empty replica votes for no one (it may be a node that held the group and lost it).
  void SetEmptyVoteFloor(uint64_t index) { empty_vote_floor_ = index; }
  // The caller finished (or gave up) streaming a snapshot to `peer`.
  void ReportSnapshot(uint64_t peer, bool ok);
  // Drops entries up to `index` (already applied and covered by the state machine's data).
  // Returns the snapshot meta to persist, or nullopt if nothing to do.
  std::optional<raftpb::SnapshotMeta> Compact(uint64_t index);
  // Quiescence: a leader whose followers all hold every committed entry, with nothing pending,
  // goes quiet: it drops its lease, sends one last heartbeat that tells followers to stop
  // ticking too, and then neither ticks nor heartbeats. Followers listed in `unreachable`
  // (their node's liveness lapsed) need not be caught up, but a quorum must be. Returns false
  // (and changes nothing) when the group is not quiet. Any message other than acknowledgements
  // of the quiet state, a proposal, a read, a transfer or Unquiesce wakes the group.
  bool Quiesce(const std::set<uint64_t>& unreachable);
  // Wakes a quiet group (the caller saw a member's node liveness lapse, or has work for it).
  // A woken follower also wakes its leader.
  void Unquiesce();
  bool quiesced() const { return quiesced_; }
  // The follower's applied index, reported to the leader in responses.
  void SetApplied(uint64_t applied) { local_applied_ = applied; }

  bool HasReady() const;
  Ready GetReady();
  void Advance(const Ready& ready);

  uint64_t id() const { return cfg_.id; }
  uint64_t group_id() const { return cfg_.group_id; }
  Role role() const { return role_; }
  uint64_t term() const { return term_; }
  uint64_t vote() const { return vote_; }
  uint64_t leader() const { return leader_; }
  uint64_t commit() const { return commit_; }
  uint64_t last_index() const { return log_.last_index(); }
  uint64_t first_index() const { return log_.first_index(); }
  uint64_t handed_out() const { return handed_out_; }
  const RaftLog& log() const { return log_; }
  const raftpb::ConfState& conf() const { return conf_; }
  // Index of a committed membership change whose data does not decode (0: none). The caller
  // must stop: the membership from there on is unknown, and guessing could break quorums.
  uint64_t malformed_conf_change() const { return malformed_conf_index_; }
  // A snapshot accepted by Step and not yet handed out in a Ready.
  const std::optional<raftpb::SnapshotMeta>& pending_snapshot() const { return pending_snapshot_; }
  // Payload bytes of the log entries up to index i that compaction would drop.
  uint64_t LogBytesThrough(uint64_t i) const { return log_.BytesThrough(i); }
  uint64_t log_bytes() const { return log_.bytes(); }
  std::string AddressOf(uint64_t node) const;
  bool IsVoter(uint64_t node) const;
  bool IsMember(uint64_t node) const;
  // The membership in force at log index `index` (at or after the first index kept).
  raftpb::ConfState ConfAt(uint64_t index) const;
  // Leader only.
  std::vector<PeerStatus> Peers() const;
  // Lowest applied index reported by any voter (leader only); for WRITE_ALL.
  uint64_t MinVoterApplied() const;

 private:
  using ProgressState = Progress::State;
  struct PendingRead {
    uint64_t request_id;
    uint64_t from;  // node to answer (self: a local ReadState)
    uint64_t index;
    uint64_t round;
  };

  void BecomeFollower(uint64_t term, uint64_t leader);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void Campaign(bool pre_vote, bool transfer);
  void ResetTimers();
  bool Promotable() const { return IsVoter(cfg_.id); }
  void SetConf(const raftpb::ConfState& conf);
  // The election's outcome so far, from votes_granted_ and votes_rejected_.
  VoteResult Tally() const;
  // Leader: proposes CONF_LEAVE_JOINT once a joint configuration is in force.
  void MaybeLeaveJoint();
  // A learner about to become a voter has replicated the log, and is not far behind.
  absl::Status CheckCaughtUp(uint64_t learner) const;

  void StepLeader(const raftpb::Message& m);
  void StepCandidate(const raftpb::Message& m);
  void StepFollower(const raftpb::Message& m);
  void HandleVoteRequest(const raftpb::Message& m);
  void HandleAppend(const raftpb::Message& m);
  void HandleHeartbeat(const raftpb::Message& m);
  void HandleSnapshot(const raftpb::Message& m);
  void HandleAppendResponse(const raftpb::Message& m);
  void HandleHeartbeatResponse(const raftpb::Message& m);
  void HandleReadIndexRequest(uint64_t request_id, uint64_t from);
  // Does `m` leave a quiet group quiet (an acknowledgement, or the leader's quiesce heartbeat)?
  bool KeepsQuiet(const raftpb::Message& m) const;

  void Send(raftpb::Message m);
  void SendAppend(uint64_t to, Progress& pr, bool allow_empty);
  void BroadcastAppends(bool allow_empty);
  void BroadcastHeartbeats(uint64_t round);
  bool MaybeCommit();
  void AppendEntry(raftpb::Entry e);
  void ResetProgress();
  void ApplyConfChange(uint64_t index, const raftpb::ConfChange& cc);
  void ReleaseReads();
  void FailAllReads();
  bool CommittedInCurrentTerm() const;

  Config cfg_;
  std::mt19937_64 rng_;
  Role role_ = Role::kFollower;
  uint64_t term_ = 0;
  uint64_t vote_ = 0;
  uint64_t commit_ = 0;
  // Leader only: payload bytes appended in this term and not yet committed (max_uncommitted_bytes).
  uint64_t uncommitted_bytes_ = 0;
  uint64_t leader_ = 0;
  RaftLog log_;
  raftpb::ConfState conf_;
  QuorumConfig quorum_;  // conf_'s voters (SetConf keeps them together)
  // (index, membership from that index on), for the snapshot meta at a compaction point.
  std::vector<std::pair<uint64_t, raftpb::ConfState>> conf_history_;
  uint64_t pending_conf_index_ = 0;

  uint64_t stable_index_ = 0;  // entries persisted up to here
  uint64_t handed_out_ = 0;    // committed entries handed out up to here
  uint64_t local_applied_ = 0;
  bool truncated_unstable_ = false;  // entries below stable were replaced: persist from there
  uint64_t persist_from_ = 0;
  std::optional<raftpb::SnapshotMeta> pending_snapshot_;
  uint64_t malformed_conf_index_ = 0;
  uint64_t empty_vote_floor_ = 0;
  raftpb::HardState persisted_hs_;
  bool conf_changed_since_ready_ = false;
  bool quiesced_ = false;

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_timeout_ = 0;
  uint64_t now_ = 0;  // ticks since start; the lease clock
  std::set<uint64_t> votes_granted_;
  std::set<uint64_t> votes_rejected_;

  std::map<uint64_t, Progress> progress_;  // leader: every member but self
  uint64_t transfer_target_ = 0;
  int transfer_elapsed_ = 0;
  bool appends_dirty_ = false;

  // ReadIndex (leader): rounds are heartbeat rounds; a read is released when a quorum acked a
  // round >= its own.
  uint64_t read_round_ = 0;
  std::map<uint64_t, uint64_t> round_sent_tick_;
  std::vector<PendingRead> pending_reads_;
  std::vector<std::pair<uint64_t, uint64_t>> reads_awaiting_commit_;  // (request, from)
  bool read_round_needed_ = false;
  uint64_t lease_until_ = 0;
  uint64_t inherited_lease_until_ = 0, inherited_lease_term_ = 0;

  std::vector<raftpb::Message> msgs_;
  std::vector<ReadState> read_states_;
  std::vector<uint64_t> failed_reads_;
  std::vector<uint64_t> snapshot_requests_;
};

}  // namespace kv::raft
