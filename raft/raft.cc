#include "raft/raft.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "raft/confchange.h"

namespace kv::raft {
namespace {

using raftpb::Message;

constexpr uint64_t kTransferContext = 1;
// A learner within this many entries of the leader's log may be promoted.
constexpr uint64_t kPromoteMaxLag = 1000;

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

BootstrapState Bootstrap(const raftpb::ConfState& voters) {
  BootstrapState b;
  raftpb::ConfChange cc;
  cc.set_type(raftpb::CONF_BOOTSTRAP);
  *cc.mutable_initial_voters() = voters.voters();
  raftpb::Entry e;
  e.set_index(1);
  e.set_term(1);
  e.set_type(raftpb::ENTRY_CONF_CHANGE);
  e.set_data(cc.SerializeAsString());
  b.entries.push_back(std::move(e));
  b.hard_state.set_term(1);
  b.hard_state.set_commit(1);
  *b.snapshot.mutable_conf() = voters;
  return b;
}

Raft::Raft(const Config& config)
    : cfg_(config), rng_(config.seed * 0x9E3779B97F4A7C15ull + config.id) {
  ResetTimers();
}

void Raft::Restore(const raftpb::HardState& hs, const raftpb::SnapshotMeta& snap,
                   std::vector<raftpb::Entry> entries, uint64_t applied) {
  log_.Reset(snap.index(), snap.term());
  for (auto& e : entries) {
    if (e.index() != log_.last_index() + 1) break;  // the driver loads a contiguous run
    log_.Append(std::move(e));
  }
  SetConf(snap.conf());
  conf_history_ = {{snap.index(), conf_}};
  term_ = hs.term();
  vote_ = hs.vote();
  commit_ = std::min(std::max({hs.commit(), snap.index(), applied}), log_.last_index());
  stable_index_ = log_.last_index();
  handed_out_ = std::max(std::min(applied, commit_), snap.index());
  local_applied_ = handed_out_;
  for (uint64_t i = log_.first_index(); i <= handed_out_; ++i) {
    const auto& e = log_.At(i);
    if (e.type() != raftpb::ENTRY_CONF_CHANGE) continue;
    raftpb::ConfChange cc;
    if (!cc.ParseFromString(e.data())) {
      if (malformed_conf_index_ == 0) malformed_conf_index_ = i;
      continue;
    }
    ApplyConfChange(i, cc);
  }
  conf_changed_since_ready_ = false;
  persisted_hs_ = hs;
  role_ = Role::kFollower;
  leader_ = 0;
  ResetTimers();
}

std::string Raft::AddressOf(uint64_t node) const {
  for (const raftpb::Member* m : MembersOf(conf_)) {
    if (m->id() == node) return m->address();
  }
  return "";
}

bool Raft::IsVoter(uint64_t node) const { return quorum_.IsVoter(node); }
bool Raft::IsMember(uint64_t node) const { return IsMemberOf(conf_, node); }

void Raft::SetConf(const raftpb::ConfState& conf) {
  conf_ = conf;
  quorum_ = QuorumOf(conf_);
}

VoteResult Raft::Tally() const {
  return quorum_.Vote([&](uint64_t id) -> std::optional<bool> {
    if (votes_granted_.contains(id)) return true;
    if (votes_rejected_.contains(id)) return false;
    return std::nullopt;
  });
}

void Raft::ResetTimers() {
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  randomized_timeout_ =
      cfg_.election_tick + static_cast<int>(rng_() % static_cast<uint64_t>(cfg_.election_tick));
}

void Raft::Send(Message m) {
  m.set_group_id(cfg_.group_id);
  m.set_from(cfg_.id);
  if (m.type() != raftpb::MSG_PRE_VOTE && m.type() != raftpb::MSG_PRE_VOTE_RESP) {
    m.set_term(term_);
  }
  if (m.type() == raftpb::MSG_APPEND_RESP || m.type() == raftpb::MSG_HEARTBEAT_RESP) {
    m.set_applied(local_applied_);
  }
  msgs_.push_back(std::move(m));
}

// ---------------------------------------------------------------------------------------------
// Roles (Raft §5.2, pre-vote §9.6 of Ongaro's dissertation)

void Raft::BecomeFollower(uint64_t term, uint64_t leader) {
  if (term > term_) {
    term_ = term;
    vote_ = 0;
  }
  bool was_leader = role_ == Role::kLeader;
  role_ = Role::kFollower;
  quiesced_ = false;
  leader_ = leader;
  ResetTimers();
  if (was_leader) {
    progress_.clear();
    FailAllReads();
  }
  transfer_target_ = 0;
  lease_until_ = 0;
  inherited_lease_term_ = 0;
  appends_dirty_ = false;
  read_round_needed_ = false;
}

void Raft::BecomePreCandidate() {
  role_ = Role::kPreCandidate;
  quiesced_ = false;
  leader_ = 0;
  votes_granted_ = {cfg_.id};
  votes_rejected_.clear();
}

void Raft::BecomeCandidate() {
  role_ = Role::kCandidate;
  ++term_;
  vote_ = cfg_.id;
  leader_ = 0;
  votes_granted_ = {cfg_.id};
  votes_rejected_.clear();
  ResetTimers();
}

void Raft::BecomeLeader() {
  role_ = Role::kLeader;
  leader_ = cfg_.id;
  transfer_target_ = 0;
  lease_until_ = term_ == inherited_lease_term_ ? inherited_lease_until_ : 0;
  inherited_lease_term_ = 0;
  uncommitted_bytes_ = 0;
  ResetProgress();
  ResetTimers();
  // Any conf change in the uncommitted tail counts as pending until it is handed out.
  pending_conf_index_ = log_.last_index();
  raftpb::Entry noop;
  AppendEntry(std::move(noop));
}

void Raft::ResetProgress() {
  progress_.clear();
  auto add = [&](uint64_t id) {
    if (id == cfg_.id) return;
    Progress pr;
    pr.next = log_.last_index() + 1;
    progress_[id] = pr;
  };
  for (const raftpb::Member* m : MembersOf(conf_)) add(m->id());
}

void Raft::Campaign(bool pre_vote, bool transfer) {
  if (!Promotable()) return;
  if (pre_vote) {
    BecomePreCandidate();
    ResetTimers();
  } else {
    BecomeCandidate();
  }
  if (Tally() == VoteResult::kWon) {
    if (pre_vote) {
      Campaign(false, transfer);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (uint64_t voter : quorum_.Voters()) {
    if (voter == cfg_.id) continue;
    Message m;
    m.set_to(voter);
    m.set_type(pre_vote ? raftpb::MSG_PRE_VOTE : raftpb::MSG_VOTE);
    // A pre-vote asks "would you vote for me in the next term?" without moving to it.
    m.set_term(pre_vote ? term_ + 1 : term_);
    m.set_index(log_.last_index());
    m.set_log_term(log_.last_term());
    if (transfer) m.set_context(kTransferContext);
    Send(std::move(m));
  }
}

// ---------------------------------------------------------------------------------------------
// Ticks

void Raft::CampaignNow() {
  if (quiesced_) Unquiesce();
  if (role_ != Role::kLeader && Promotable()) Campaign(false, true);
}

uint64_t Raft::LeaseTicksLeft() const {
  return HasLease() && lease_until_ > now_ ? lease_until_ - now_ : 0;
}

void Raft::InheritLease(uint64_t ticks) {
  if (role_ == Role::kLeader || ticks == 0) return;
  inherited_lease_until_ = now_ + ticks;
  inherited_lease_term_ = term_ + 1;
}

void Raft::Tick() {
  if (quiesced_) return;
  ++now_;
  if (role_ != Role::kLeader) {
    ++election_elapsed_;
    // A sole voter has nobody to wait for.
    bool alone = quorum_.OnlyVoterIs(cfg_.id);
    if (Promotable() && (alone || election_elapsed_ >= randomized_timeout_)) {
      Campaign(cfg_.pre_vote, false);
    }
    return;
  }
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (transfer_target_ != 0 && ++transfer_elapsed_ >= cfg_.election_tick) {
    transfer_target_ = 0;  // give up; keep leading
  }
  if (election_elapsed_ >= cfg_.election_tick) {
    election_elapsed_ = 0;
    if (cfg_.check_quorum) {
      // Check-quorum: a leader that has not heard from a majority in an election timeout steps
      // down, so a partitioned leader stops serving and clients find the new one.
      bool active = quorum_.HasQuorum([&](uint64_t id) {
        if (id == cfg_.id) return true;
        auto it = progress_.find(id);
        return it != progress_.end() && it->second.recent_active;
      });
      for (auto& [id, pr] : progress_) pr.recent_active = false;
      if (!active) {
        BecomeFollower(term_, 0);
        return;
      }
    }
  }
  if (heartbeat_elapsed_ >= cfg_.heartbeat_tick) {
    heartbeat_elapsed_ = 0;
    read_round_needed_ = true;  // every heartbeat is a read round: it also renews the lease
  }
  MaybeLeaveJoint();
}

void Raft::MaybeLeaveJoint() {
  // The joint configuration is committed (it applied here) and nothing else is pending: move to
  // the incoming voters alone. A leader elected in the middle of a change completes it too.
  if (role_ != Role::kLeader || !quorum_.joint() || pending_conf_index_ > handed_out_ ||
      transfer_target_ != 0 || !CommittedInCurrentTerm()) {
    return;
  }
  raftpb::ConfChange leave;
  leave.set_type(raftpb::CONF_LEAVE_JOINT);
  raftpb::Entry e;
  e.set_type(raftpb::ENTRY_CONF_CHANGE);
  e.set_data(leave.SerializeAsString());
  AppendEntry(std::move(e));
  pending_conf_index_ = log_.last_index();
}

// ---------------------------------------------------------------------------------------------
// Messages

void Raft::Step(const Message& m) {
  if (m.group_id() != cfg_.group_id || m.type() == raftpb::MSG_GROUP_UNKNOWN) return;
  if (quiesced_ && !KeepsQuiet(m)) Unquiesce();
  bool vote_request = m.type() == raftpb::MSG_PRE_VOTE || m.type() == raftpb::MSG_VOTE;
  if (m.term() > term_) {
    if (vote_request) {
      // Leader stickiness: while we hear from a leader, refuse to help depose it, unless the
      // leader itself asked for the election (leadership transfer).
      bool in_lease = cfg_.check_quorum && leader_ != 0 && election_elapsed_ < cfg_.election_tick;
      if (in_lease && m.context() != kTransferContext) return;
    }
    if (m.type() == raftpb::MSG_PRE_VOTE ||
        (m.type() == raftpb::MSG_PRE_VOTE_RESP && !m.reject())) {
      // Pre-votes do not move terms.
    } else {
      bool from_leader = m.type() == raftpb::MSG_APPEND || m.type() == raftpb::MSG_HEARTBEAT ||
                         m.type() == raftpb::MSG_SNAPSHOT;
      BecomeFollower(m.term(), from_leader ? m.from() : 0);
    }
  } else if (m.term() < term_) {
    if ((cfg_.check_quorum || cfg_.pre_vote) &&
        (m.type() == raftpb::MSG_APPEND || m.type() == raftpb::MSG_HEARTBEAT)) {
      // Tell a stale leader about the newer term so it steps down.
      Message resp;
      resp.set_to(m.from());
      resp.set_type(raftpb::MSG_APPEND_RESP);
      Send(std::move(resp));
    } else if (m.type() == raftpb::MSG_PRE_VOTE) {
      Message resp;
      resp.set_to(m.from());
      resp.set_type(raftpb::MSG_PRE_VOTE_RESP);
      resp.set_term(term_);
      resp.set_reject(true);
      Send(std::move(resp));
    } else if (m.type() == raftpb::MSG_READ_INDEX && role_ == Role::kLeader) {
      HandleReadIndexRequest(m.context(), m.from());
    }
    return;
  }
  if (vote_request) {
    HandleVoteRequest(m);
    return;
  }
  switch (role_) {
    case Role::kLeader:
      StepLeader(m);
      break;
    case Role::kPreCandidate:
    case Role::kCandidate:
      StepCandidate(m);
      break;
    case Role::kFollower:
      StepFollower(m);
      break;
  }
}

void Raft::HandleVoteRequest(const Message& m) {
  bool pre = m.type() == raftpb::MSG_PRE_VOTE;
  bool can_vote = vote_ == m.from() || (vote_ == 0 && leader_ == 0) || (pre && m.term() > term_);
  // A replica that knows no membership yet (made empty, waiting for its leader's snapshot) may
  // be a node that held this group before and lost it: its empty log would let a candidate
  // missing committed entries win. It votes once it holds the group's state, or, as a split
  // child's, for a candidate that holds the split (SetEmptyVoteFloor).
  if (conf_.voters_size() == 0) {
    can_vote = can_vote && empty_vote_floor_ != 0 && m.index() >= empty_vote_floor_;
  }
  Message resp;
  resp.set_to(m.from());
  resp.set_type(pre ? raftpb::MSG_PRE_VOTE_RESP : raftpb::MSG_VOTE_RESP);
  if (can_vote && log_.IsUpToDate(m.index(), m.log_term())) {
    resp.set_term(pre ? m.term() : term_);
    if (!pre) {
      vote_ = m.from();
      election_elapsed_ = 0;
    }
  } else {
    resp.set_term(term_);
    resp.set_reject(true);
  }
  Send(std::move(resp));
}

void Raft::StepCandidate(const Message& m) {
  auto expected = role_ == Role::kPreCandidate ? raftpb::MSG_PRE_VOTE_RESP : raftpb::MSG_VOTE_RESP;
  switch (m.type()) {
    case raftpb::MSG_APPEND:
    case raftpb::MSG_HEARTBEAT:
    case raftpb::MSG_SNAPSHOT:
      BecomeFollower(m.term(), m.from());
      StepFollower(m);
      return;
    default:
      break;
  }
  if (m.type() != expected || !IsVoter(m.from())) return;
  (m.reject() ? votes_rejected_ : votes_granted_).insert(m.from());
  switch (Tally()) {
    case VoteResult::kWon:
      if (role_ == Role::kPreCandidate) {
        Campaign(false, false);
      } else {
        BecomeLeader();
      }
      break;
    case VoteResult::kLost:
      BecomeFollower(term_, 0);
      break;
    case VoteResult::kPending:
      break;
  }
}

void Raft::StepFollower(const Message& m) {
  switch (m.type()) {
    case raftpb::MSG_APPEND:
    case raftpb::MSG_HEARTBEAT:
    case raftpb::MSG_SNAPSHOT:
      // Only a leader of this term sends these: it is alive, and it is the leader.
      election_elapsed_ = 0;
      leader_ = m.from();
      if (m.type() == raftpb::MSG_APPEND) {
        HandleAppend(m);
      } else if (m.type() == raftpb::MSG_HEARTBEAT) {
        HandleHeartbeat(m);
      } else {
        HandleSnapshot(m);
      }
      break;
    case raftpb::MSG_TIMEOUT_NOW:
      Campaign(false, true);
      break;
    case raftpb::MSG_READ_INDEX:
      if (leader_ != 0) {
        Message fwd = m;
        fwd.set_to(leader_);
        msgs_.push_back(std::move(fwd));
      }
      break;
    case raftpb::MSG_READ_INDEX_RESP:
      if (m.reject()) {
        failed_reads_.push_back(m.context());
      } else {
        read_states_.push_back(ReadState{m.context(), m.index()});
      }
      break;
    default:
      break;
  }
}

namespace {

// An append a correct leader could have sent: its entries follow the previous entry one by one,
// with terms that never decrease, never above the message's term.
bool WellFormedAppend(const Message& m) {
  uint64_t term = m.log_term();
  for (int i = 0; i < m.entries_size(); ++i) {
    const auto& e = m.entries(i);
    if (e.index() != m.index() + 1 + static_cast<uint64_t>(i) || e.term() < term ||
        e.term() > m.term()) {
      return false;
    }
    term = e.term();
  }
  return m.log_term() <= m.term();
}

}  // namespace

void Raft::HandleAppend(const Message& m) {
  // Malformed input is dropped, never half applied: the log is the one thing that must not be
  // damaged.
  if (!WellFormedAppend(m)) return;
  Message resp;
  resp.set_to(m.from());
  resp.set_type(raftpb::MSG_APPEND_RESP);
  if (m.index() < commit_) {
    resp.set_index(commit_);
    Send(std::move(resp));
    return;
  }
  auto term_at = log_.Term(m.index());
  if (!term_at || *term_at != m.log_term()) {
    resp.set_reject(true);
    resp.set_index(m.index());
    // Skip the whole conflicting term (or jump to our end) instead of one entry per round trip.
    resp.set_reject_hint(m.index() > log_.last_index()
                             ? log_.last_index() + 1
                             : log_.FirstIndexOfTermAt(m.index(), commit_ + 1));
    Send(std::move(resp));
    return;
  }
  for (const auto& e : m.entries()) {
    if (e.index() <= log_.last_index()) {
      auto t = log_.Term(e.index());
      if (!t || *t == e.term()) continue;  // compacted (committed) or already present
      // A committed entry is never replaced; a leader that says otherwise is not to be believed.
      if (e.index() <= commit_) return;
      // Log matching: the first conflicting entry and all that follow are replaced (§5.3).
      log_.TruncateFrom(e.index());
      if (e.index() <= stable_index_) {
        stable_index_ = e.index() - 1;
        persist_from_ = truncated_unstable_ ? std::min(persist_from_, e.index()) : e.index();
        truncated_unstable_ = true;
      }
    }
    log_.Append(e);
  }
  uint64_t last_new = m.index() + static_cast<uint64_t>(m.entries_size());
  commit_ = std::max(commit_, std::min(m.commit(), last_new));
  resp.set_index(last_new);
  Send(std::move(resp));
}

void Raft::HandleHeartbeat(const Message& m) {
  // The leader sends min(its commit, our match), so every entry up to it matches its log.
  commit_ = std::max(commit_, std::min(m.commit(), log_.last_index()));
  if (m.quiesce() && commit_ == m.index() && log_.last_index() == m.index()) {
    // Everything the leader has is here and committed: stop ticking with it. No answer (an
    // answer would only wake the leader); if this heartbeat is lost, this follower times out,
    // and its pre-vote wakes the group.
    quiesced_ = true;
    return;
  }
  Message resp;
  resp.set_to(m.from());
  resp.set_type(raftpb::MSG_HEARTBEAT_RESP);
  resp.set_context(m.context());
  Send(std::move(resp));
}

void Raft::HandleSnapshot(const Message& m) {
  Message resp;
  resp.set_to(m.from());
  resp.set_type(raftpb::MSG_APPEND_RESP);
  const auto& meta = m.snapshot();
  if (meta.conf().voters_size() == 0) return;  // malformed: a group always has voters
  if (meta.index() <= commit_) {
    resp.set_index(commit_);
    Send(std::move(resp));
    return;
  }
  log_.Reset(meta.index(), meta.term());
  SetConf(meta.conf());
  conf_history_ = {{meta.index(), conf_}};
  commit_ = meta.index();
  stable_index_ = meta.index();
  handed_out_ = meta.index();
  local_applied_ = meta.index();
  truncated_unstable_ = false;
  pending_conf_index_ = 0;
  pending_snapshot_ = meta;
  resp.set_index(meta.index());
  Send(std::move(resp));
}

// ---------------------------------------------------------------------------------------------
// Leader

void Raft::StepLeader(const Message& m) {
  auto it = progress_.find(m.from());
  switch (m.type()) {
    case raftpb::MSG_APPEND_RESP:
      if (it != progress_.end()) HandleAppendResponse(m);
      break;
    case raftpb::MSG_HEARTBEAT_RESP:
      if (it != progress_.end()) HandleHeartbeatResponse(m);
      break;
    case raftpb::MSG_READ_INDEX:
      HandleReadIndexRequest(m.context(), m.from());
      break;
    default:
      break;
  }
}

void Raft::HandleAppendResponse(const Message& m) {
  Progress& pr = progress_[m.from()];
  pr.recent_active = true;
  pr.applied = std::max(pr.applied, m.applied());
  if (m.reject()) {
    if (pr.Rejected(m.index(), m.reject_hint())) SendAppend(m.from(), pr, true);
    return;
  }
  pr.Accepted(m.index());
  if (MaybeCommit()) {
    BroadcastAppends(true);
  } else {
    SendAppend(m.from(), pr, false);
  }
  if (transfer_target_ == m.from() && pr.match == log_.last_index()) {
    Message now;
    now.set_to(m.from());
    now.set_type(raftpb::MSG_TIMEOUT_NOW);
    Send(std::move(now));
  }
}

void Raft::HandleHeartbeatResponse(const Message& m) {
  Progress& pr = progress_[m.from()];
  pr.recent_active = true;
  pr.applied = std::max(pr.applied, m.applied());
  pr.read_ack = std::max(pr.read_ack, m.context());
  // Appends may have been lost: free a slot of a full window, and send even an empty append so
  // that a follower missing entries answers with a rejection that restarts probing.
  pr.HeartbeatAnswered(static_cast<size_t>(cfg_.max_inflight));
  if (pr.match < log_.last_index()) SendAppend(m.from(), pr, true);
  ReleaseReads();
}

void Raft::SendAppend(uint64_t to, Progress& pr, bool allow_empty) {
  if (pr.IsPaused(static_cast<size_t>(cfg_.max_inflight))) return;
  auto prev_term = log_.Term(pr.next - 1);
  if (!prev_term) {
    // The entries this follower needs were compacted away: it needs a snapshot.
    if (pr.NeedsSnapshot()) snapshot_requests_.push_back(to);
    return;
  }
  Message m;
  m.set_to(to);
  m.set_type(raftpb::MSG_APPEND);
  m.set_index(pr.next - 1);
  m.set_log_term(*prev_term);
  m.set_commit(commit_);
  if (pr.next <= log_.last_index()) {
    for (auto& e : log_.Slice(pr.next, log_.last_index() + 1, cfg_.max_append_bytes)) {
      *m.add_entries() = std::move(e);
    }
  }
  if (m.entries_size() == 0 && !allow_empty) return;
  pr.SentAppend(static_cast<size_t>(m.entries_size()),
                m.entries_size() > 0 ? m.entries(m.entries_size() - 1).index() : 0);
  Send(std::move(m));
}

void Raft::BroadcastAppends(bool allow_empty) {
  for (auto& [id, pr] : progress_) SendAppend(id, pr, allow_empty);
}

void Raft::BroadcastHeartbeats(uint64_t round) {
  for (auto& [id, pr] : progress_) {
    Message m;
    m.set_to(id);
    m.set_type(raftpb::MSG_HEARTBEAT);
    m.set_commit(std::min(pr.match, commit_));
    m.set_index(commit_);  // the true commit index, for followers' staleness bounds
    m.set_context(round);
    Send(std::move(m));
  }
}

bool Raft::CommittedInCurrentTerm() const {
  auto t = log_.Term(commit_);
  return t && *t == term_;
}

bool Raft::MaybeCommit() {
  uint64_t q = quorum_.QuorumIndex([&](uint64_t id) -> uint64_t {
    if (id == cfg_.id) return stable_index_;  // the leader's own entry counts once it is durable
    auto it = progress_.find(id);
    return it == progress_.end() ? 0 : it->second.match;
  });
  // §5.4.2: only entries of the current term are committed by counting replicas.
  if (q <= commit_ || log_.Term(q) != term_) return false;
  bool first_in_term = !CommittedInCurrentTerm();
  for (uint64_t i = commit_ + 1; i <= q && uncommitted_bytes_ > 0; ++i) {
    uncommitted_bytes_ -= std::min<uint64_t>(uncommitted_bytes_, log_.At(i).data().size());
  }
  commit_ = q;
  if (first_in_term) {
    auto waiting = std::move(reads_awaiting_commit_);
    reads_awaiting_commit_.clear();
    for (auto [request, from] : waiting) HandleReadIndexRequest(request, from);
  }
  return true;
}

void Raft::AppendEntry(raftpb::Entry e) {
  e.set_term(term_);
  e.set_index(log_.last_index() + 1);
  if (role_ == Role::kLeader) uncommitted_bytes_ += e.data().size();
  log_.Append(std::move(e));
  appends_dirty_ = true;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> Raft::Propose(std::string data) {
  if (quiesced_) Unquiesce();
  if (role_ != Role::kLeader) {
    return absl::FailedPreconditionError(absl::StrCat("node ", cfg_.id, " is not the leader"));
  }
  if (transfer_target_ != 0) {
    return absl::UnavailableError("leadership transfer in progress; retry");
  }
  if (cfg_.max_uncommitted_bytes > 0 && uncommitted_bytes_ > 0 &&
      uncommitted_bytes_ + data.size() > cfg_.max_uncommitted_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "group ", cfg_.group_id, " holds ", uncommitted_bytes_, " uncommitted bytes (limit ",
        cfg_.max_uncommitted_bytes, "): it cannot reach a quorum fast enough; retry later"));
  }
  raftpb::Entry e;
  e.set_data(std::move(data));
  AppendEntry(std::move(e));
  return std::make_pair(log_.last_index(), term_);
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> Raft::ProposeConfChange(
    const raftpb::ConfChange& cc) {
  if (quiesced_) Unquiesce();
  if (role_ != Role::kLeader) {
    return absl::FailedPreconditionError(absl::StrCat("node ", cfg_.id, " is not the leader"));
  }
  if (pending_conf_index_ > handed_out_) {
    return absl::UnavailableError("another membership change is in progress; retry");
  }
  // A leader must commit in its own term before changing membership (the known single-server
  // change hazard: an uncommitted change of an earlier term could otherwise be overwritten).
  if (!CommittedInCurrentTerm()) {
    return absl::UnavailableError("the new leader has not committed yet; retry");
  }
  if (cc.type() == raftpb::CONF_BOOTSTRAP || cc.type() == raftpb::CONF_FORCE_NEW_CLUSTER) {
    return absl::InvalidArgumentError("not a membership change a leader proposes");
  }
  if (auto st = CheckConfChange(conf_, cc); !st.ok()) return st;
  if (cc.type() == raftpb::CONF_ENTER_JOINT &&
      std::none_of(cc.voters().begin(), cc.voters().end(),
                   [&](const raftpb::Member& m) { return m.id() == cfg_.id; })) {
    // A leader among the outgoing voters only would hand its last entries to nodes that stop
    // being voters, and could leave an incoming voter unable to win an election.
    return absl::FailedPreconditionError(
        absl::StrCat("node ", cfg_.id,
                     " leads but is not among the incoming voters: transfer leadership to "
                     "one of them first"));
  }
  // New voters must have caught up: a vote that cannot be cast (a learner not started, at a
  // wrong address, of another cluster) would make quorums harder to reach.
  std::vector<uint64_t> becoming_voters;
  if (cc.type() == raftpb::CONF_PROMOTE_LEARNER) becoming_voters.push_back(cc.node_id());
  if (cc.type() == raftpb::CONF_ENTER_JOINT) {
    for (const auto& m : cc.voters()) {
      if (!IsVoter(m.id())) becoming_voters.push_back(m.id());
    }
  }
  for (uint64_t id : becoming_voters) {
    if (auto st = CheckCaughtUp(id); !st.ok()) return st;
  }
  if (transfer_target_ != 0) {
    return absl::UnavailableError("leadership transfer in progress; retry");
  }
  raftpb::Entry e;
  e.set_type(raftpb::ENTRY_CONF_CHANGE);
  e.set_data(cc.SerializeAsString());
  AppendEntry(std::move(e));
  pending_conf_index_ = log_.last_index();
  return std::make_pair(log_.last_index(), term_);
}

absl::Status Raft::CheckCaughtUp(uint64_t learner) const {
  auto pr = progress_.find(learner);
  uint64_t match = pr == progress_.end() ? 0 : pr->second.match;
  if (match == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "learner ", learner,
        " has not replicated anything yet (not started, unreachable, or another cluster); "
        "start it with --join, wait until it catches up, then promote"));
  }
  if (match + kPromoteMaxLag < log_.last_index()) {
    return absl::FailedPreconditionError(
        absl::StrCat("learner ", learner, " is ", log_.last_index() - match,
                     " entries behind; promote it once it has caught up"));
  }
  return absl::OkStatus();
}

void Raft::ApplyConfChange(uint64_t index, const raftpb::ConfChange& cc) {
  bool always = cc.type() == raftpb::CONF_BOOTSTRAP || cc.type() == raftpb::CONF_FORCE_NEW_CLUSTER;
  if (!always && !CheckConfChange(conf_, cc).ok()) return;  // deterministic everywhere: a no-op
  SetConf(raft::ApplyConfChange(conf_, cc));
  if (role_ == Role::kLeader) {
    for (const raftpb::Member* m : MembersOf(conf_)) {
      if (m->id() == cfg_.id || progress_.contains(m->id())) continue;
      Progress pr;
      pr.next = log_.last_index() + 1;
      progress_[m->id()] = pr;
    }
  }
  for (auto it = progress_.begin(); it != progress_.end();) {
    it = IsMember(it->first) ? std::next(it) : progress_.erase(it);
  }
  conf_.set_index(index);
  conf_history_.emplace_back(index, conf_);
  conf_changed_since_ready_ = true;
  if (role_ == Role::kLeader) {
    if (!IsVoter(cfg_.id)) {
      BecomeFollower(term_, 0);  // removed (or demoted) leader steps down
      return;
    }
    if (MaybeCommit()) BroadcastAppends(true);
    ReleaseReads();
  }
}

raftpb::ConfState Raft::ConfAt(uint64_t index) const {
  raftpb::ConfState conf = conf_history_.front().second;
  for (const auto& [at, c] : conf_history_) {
    if (at <= index) conf = c;
  }
  return conf;
}

// ---------------------------------------------------------------------------------------------
// Reads (ReadIndex, §6.4 of the dissertation) and the lease

void Raft::ReadIndex(uint64_t request_id) {
  if (quiesced_) Unquiesce();
  if (role_ == Role::kLeader) {
    HandleReadIndexRequest(request_id, cfg_.id);
  } else if (leader_ != 0) {
    Message m;
    m.set_to(leader_);
    m.set_type(raftpb::MSG_READ_INDEX);
    m.set_context(request_id);
    Send(std::move(m));
  } else {
    failed_reads_.push_back(request_id);
  }
}

void Raft::HandleReadIndexRequest(uint64_t request_id, uint64_t from) {
  if (role_ != Role::kLeader) return;
  if (!CommittedInCurrentTerm()) {
    // Until the no-op of this term commits, commit_ may be behind what earlier leaders committed.
    reads_awaiting_commit_.emplace_back(request_id, from);
    return;
  }
  if (quorum_.OnlyVoterIs(cfg_.id)) {
    pending_reads_.push_back(PendingRead{request_id, from, commit_, 0});
    ReleaseReads();
    return;
  }
  pending_reads_.push_back(PendingRead{request_id, from, commit_, read_round_ + 1});
  read_round_needed_ = true;
}

void Raft::ReleaseReads() {
  if (role_ != Role::kLeader) return;
  if (quorum_.Voters().empty()) return;
  uint64_t confirmed = quorum_.QuorumIndex([&](uint64_t id) -> uint64_t {
    if (id == cfg_.id) return read_round_;
    auto it = progress_.find(id);
    return it == progress_.end() ? 0 : it->second.read_ack;
  });
  // The lease runs from when the confirmed round was sent, not when the acks arrived.
  auto sent = round_sent_tick_.find(confirmed);
  if (sent != round_sent_tick_.end()) {
    uint64_t until = sent->second + static_cast<uint64_t>(
                                        std::max(0, cfg_.election_tick - cfg_.lease_margin_ticks));
    if (transfer_target_ == 0) lease_until_ = std::max(lease_until_, until);
  }
  round_sent_tick_.erase(round_sent_tick_.begin(), round_sent_tick_.upper_bound(confirmed));
  std::vector<PendingRead> still;
  for (auto& r : pending_reads_) {
    if (r.round > confirmed) {
      still.push_back(r);
    } else if (r.from == cfg_.id) {
      read_states_.push_back(ReadState{r.request_id, r.index});
    } else {
      Message m;
      m.set_to(r.from);
      m.set_type(raftpb::MSG_READ_INDEX_RESP);
      m.set_context(r.request_id);
      m.set_index(r.index);
      Send(std::move(m));
    }
  }
  pending_reads_ = std::move(still);
}

void Raft::FailAllReads() {
  auto fail = [&](uint64_t request, uint64_t from) {
    if (from == cfg_.id) {
      failed_reads_.push_back(request);
      return;
    }
    Message m;
    m.set_to(from);
    m.set_type(raftpb::MSG_READ_INDEX_RESP);
    m.set_context(request);
    m.set_reject(true);
    Send(std::move(m));
  };
  for (const auto& r : pending_reads_) fail(r.request_id, r.from);
  for (const auto& [request, from] : reads_awaiting_commit_) fail(request, from);
  pending_reads_.clear();
  reads_awaiting_commit_.clear();
  round_sent_tick_.clear();
}

bool Raft::HasLease() const {
  if (role_ != Role::kLeader || transfer_target_ != 0 || !CommittedInCurrentTerm()) return false;
  return quorum_.OnlyVoterIs(cfg_.id) || now_ < lease_until_;
}

// ---------------------------------------------------------------------------------------------
// Quiescence (as CockroachDB quiesces idle ranges): an idle group costs nothing per tick.
//
// Safety does not depend on it: a quiet leader holds no lease (lease reads fall back to
// ReadIndex, which wakes the group), and a quiet follower that hears nothing from its leader's
// node wakes (the driver's node liveness) and then needs a full election timeout of ticks, like
// any follower, before it campaigns.

bool Raft::Quiesce(const std::set<uint64_t>& unreachable) {
  if (quiesced_) return true;
  if (role_ != Role::kLeader || transfer_target_ != 0 || !CommittedInCurrentTerm() ||
      commit_ != log_.last_index() || stable_index_ != log_.last_index() ||
      handed_out_ != commit_ || !pending_reads_.empty() || !reads_awaiting_commit_.empty() ||
      pending_conf_index_ > handed_out_ || quorum_.joint()) {
    return false;
  }
  auto caught_up = [&](const Progress& pr) {
    return pr.match == log_.last_index() && pr.state == ProgressState::kReplicate;
  };
  for (const auto& [id, pr] : progress_) {
    if (!caught_up(pr) && !unreachable.contains(id)) return false;
  }
  bool quorum_caught_up = quorum_.HasQuorum([&](uint64_t id) {
    if (id == cfg_.id) return true;
    auto it = progress_.find(id);
    return it != progress_.end() && caught_up(it->second);
  });
  if (!quorum_caught_up) return false;
  quiesced_ = true;
  lease_until_ = 0;
  read_round_needed_ = false;  // no read waits for it, and the lease ends here anyway
  // The tick clock stops while quiet: an acknowledgement of an earlier round arriving after
  // the group wakes must not grant a lease measured on that stopped clock.
  round_sent_tick_.clear();
  for (auto& [id, pr] : progress_) {
    if (pr.match != log_.last_index()) continue;
    // It acknowledged everything: active. No check-quorum resets this while the group is quiet,
    // so status (and whoever picks a leadership transfer target from it) sees it as it is.
    pr.recent_active = true;
    Message m;
    m.set_to(id);
    m.set_type(raftpb::MSG_HEARTBEAT);
    m.set_commit(commit_);
    m.set_index(commit_);
    m.set_quiesce(true);
    Send(std::move(m));
  }
  return true;
}

void Raft::Unquiesce() {
  if (!quiesced_) return;
  quiesced_ = false;
  election_elapsed_ = 0;
  if (role_ == Role::kLeader) {
    // Heartbeat at once: it wakes the followers and renews the lease. Followers count as
    // recently active, so the first check-quorum after a long sleep does not depose a leader
    // that nobody has yet had a chance to answer.
    heartbeat_elapsed_ = 0;
    read_round_needed_ = true;
    for (auto& [id, pr] : progress_) pr.recent_active = true;
  } else if (leader_ != 0) {
    Message wake;
    wake.set_to(leader_);
    wake.set_type(raftpb::MSG_HEARTBEAT_RESP);
    wake.set_quiesce(true);
    Send(std::move(wake));
  }
}

bool Raft::KeepsQuiet(const Message& m) const {
  if (m.term() != term_) return false;
  if (role_ == Role::kLeader) {
    if (m.quiesce() || m.reject()) return false;
    if (m.type() != raftpb::MSG_HEARTBEAT_RESP && m.type() != raftpb::MSG_APPEND_RESP) return false;
    auto it = progress_.find(m.from());
    return it != progress_.end() && it->second.match == log_.last_index();
  }
  return m.type() == raftpb::MSG_HEARTBEAT && m.quiesce() && m.from() == leader_;
}

// ---------------------------------------------------------------------------------------------
// Leadership transfer, snapshots, compaction

void Raft::TransferLeadership(uint64_t to) {
  if (quiesced_) Unquiesce();
  if (role_ != Role::kLeader || to == cfg_.id || !IsVoter(to)) return;
  transfer_target_ = to;
  transfer_elapsed_ = 0;
  lease_until_ = 0;  // the target may win at once; stop lease reads now
  auto& pr = progress_[to];
  if (pr.match == log_.last_index()) {
    Message now;
    now.set_to(to);
    now.set_type(raftpb::MSG_TIMEOUT_NOW);
    Send(std::move(now));
  } else {
    SendAppend(to, pr, false);
  }
}

void Raft::ReportSnapshot(uint64_t peer, bool ok) {
  auto it = progress_.find(peer);
  if (it == progress_.end() || it->second.state != ProgressState::kSnapshot) return;
  it->second.SnapshotReported(ok);
}

std::optional<raftpb::SnapshotMeta> Raft::Compact(uint64_t index) {
  if (index <= log_.snap_index() || index > handed_out_ || index > stable_index_) {
    return std::nullopt;
  }
  raftpb::SnapshotMeta meta;
  meta.set_index(index);
  meta.set_term(*log_.Term(index));
  *meta.mutable_conf() = ConfAt(index);
  log_.CompactTo(index);
  // Keep the membership in force at the compaction point and every later change.
  std::vector<std::pair<uint64_t, raftpb::ConfState>> kept = {{index, meta.conf()}};
  for (auto& h : conf_history_) {
    if (h.first > index) kept.push_back(h);
  }
  conf_history_ = std::move(kept);
  return meta;
}

// ---------------------------------------------------------------------------------------------
// Ready / Advance

bool Raft::HasReady() const {
  return !msgs_.empty() || pending_snapshot_.has_value() || stable_index_ < log_.last_index() ||
         truncated_unstable_ || handed_out_ < commit_ || !read_states_.empty() ||
         !failed_reads_.empty() || !snapshot_requests_.empty() || appends_dirty_ ||
         read_round_needed_ || persisted_hs_.term() != term_ || persisted_hs_.vote() != vote_ ||
         persisted_hs_.commit() != commit_;
}

Ready Raft::GetReady() {
  if (role_ == Role::kLeader) {
    if (read_round_needed_) {
      ++read_round_;
      round_sent_tick_[read_round_] = now_;
      BroadcastHeartbeats(read_round_);
      read_round_needed_ = false;
      if (quorum_.OnlyVoterIs(cfg_.id)) ReleaseReads();
    }
    if (appends_dirty_) {
      BroadcastAppends(false);  // one append per follower for everything proposed since
      appends_dirty_ = false;
    }
  }
  Ready rd;
  if (persisted_hs_.term() != term_ || persisted_hs_.vote() != vote_ ||
      persisted_hs_.commit() != commit_) {
    raftpb::HardState hs;
    hs.set_term(term_);
    hs.set_vote(vote_);
    hs.set_commit(commit_);
    rd.hard_state = hs;
  }
  rd.snapshot = pending_snapshot_;
  for (uint64_t i = stable_index_ + 1; i <= log_.last_index(); ++i)
    rd.entries.push_back(log_.At(i));
  if (truncated_unstable_) rd.truncate_from = persist_from_;
  // Committed entries are handed out once they are durable here or persisted by this Ready.
  uint64_t hi = std::min(commit_, log_.last_index());
  size_t bytes = 0;
  for (uint64_t i = handed_out_ + 1; i <= hi; ++i) {
    const auto& e = log_.At(i);
    bytes += e.data().size();
    if (!rd.committed.empty() && bytes > cfg_.max_committed_bytes) break;
    rd.committed.push_back(e);
    handed_out_ = i;
    if (e.type() == raftpb::ENTRY_CONF_CHANGE) {
      raftpb::ConfChange cc;
      if (cc.ParseFromString(e.data())) {
        ApplyConfChange(i, cc);
      } else if (malformed_conf_index_ == 0) {
        malformed_conf_index_ = i;
      }
    }
  }
  if (conf_changed_since_ready_) {
    rd.conf_state = conf_;
    conf_changed_since_ready_ = false;
  }
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  rd.failed_reads = std::move(failed_reads_);
  failed_reads_.clear();
  rd.snapshot_requests = std::move(snapshot_requests_);
  snapshot_requests_.clear();
  return rd;
}

void Raft::Advance(const Ready& rd) {
  if (rd.hard_state) persisted_hs_ = *rd.hard_state;
  if (rd.snapshot) pending_snapshot_.reset();
  if (!rd.entries.empty()) stable_index_ = std::max(stable_index_, rd.entries.back().index());
  truncated_unstable_ = false;
  if (role_ == Role::kLeader && !rd.entries.empty()) {
    if (MaybeCommit()) BroadcastAppends(true);
  }
}

std::vector<PeerStatus> Raft::Peers() const {
  std::vector<PeerStatus> out;
  for (const auto& [id, pr] : progress_) {
    PeerStatus s;
    s.id = id;
    s.voter = IsVoter(id);
    s.match = pr.match;
    s.next = pr.next;
    s.applied = pr.applied;
    s.recent_active = pr.recent_active;
    s.state = pr.state == ProgressState::kProbe       ? "probe"
              : pr.state == ProgressState::kReplicate ? "replicate"
                                                      : "snapshot";
    out.push_back(s);
  }
  return out;
}

uint64_t Raft::MinVoterApplied() const {
  uint64_t low = local_applied_;
  for (uint64_t voter : quorum_.Voters()) {
    if (voter == cfg_.id) continue;
    auto it = progress_.find(voter);
    low = std::min(low, it == progress_.end() ? 0 : it->second.applied);
  }
  return low;
}

}  // namespace kv::raft
