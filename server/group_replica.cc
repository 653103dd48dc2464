#include "server/group_replica.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "raft/confchange.h"
#include "server/logging.h"

namespace kv::server {

namespace {

class RealClock final : public DriverClock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  absl::Duration Monotonic() const override {
    return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
  }
};

}  // namespace

const DriverClock& DriverClock::Real() {
  static const RealClock clock;
  return clock;
}

[[noreturn]] void Fatal(const std::string& what) {
  logging::Error("FATAL: {}", what);
  std::abort();
}

GroupReplica::GroupReplica(internal::GroupDescriptor descriptor, std::unique_ptr<raft::Raft> raft,
                           std::unique_ptr<RaftLogStore> log_store,
                           std::unique_ptr<KvStateMachine> state_machine,
                           const DriverOptions* options)
    : descriptor_(std::move(descriptor)),
      raft_(std::move(raft)),
      log_store_(std::move(log_store)),
      sm_(std::move(state_machine)),
      options_(options) {}

uint64_t GroupReplica::ClusterClock() {
  absl::Duration now = options_->clock->Monotonic();
  if (clock_term_ != raft_->term()) {
    // A new leadership continues the clock from the applied state, in its own monotonic time.
    clock_term_ = raft_->term();
    clock_base_ms_ = sm_->clock_ms();
    clock_base_at_ = now;
  }
  return clock_base_ms_ + static_cast<uint64_t>(absl::ToInt64Milliseconds(now - clock_base_at_));
}

void GroupReplica::Propose(internal::Command command, v1::WriteConsistency consistency,
                           absl::Time deadline, WriteDone done) {
  idle_ticks = 0;
  // The epoch check at proposal: a key a split already moved away is refused before it takes a
  // log entry (the check as the command applies catches a split committed meanwhile).
  if (!sm_->Owns(command)) {
    done(absl::OutOfRangeError(absl::StrCat("the key left the shard of group ", id(),
                                            "; not applied; retry at its shard")));
    return;
  }
  command.set_cluster_clock_ms(ClusterClock());
  auto r = raft_->Propose(command.SerializeAsString());
  if (!r.ok()) {
    done(absl::IsResourceExhausted(r.status())
             ? r.status()
             : absl::UnavailableError(absl::StrCat(r.status().message(), "; retry")));
    return;
  }
  ++proposals;
  PendingWrite w;
  w.term = r->second;
  w.consistency = consistency;
  w.deadline = deadline;
  w.done = std::move(done);
  writes_[r->first] = std::move(w);
}

void SetMembers(const raftpb::ConfState& conf, internal::GroupDescriptor* d) {
  d->clear_voters();
  d->clear_learners();
  // During a joint change the outgoing voters are still voters: a node must keep its replica
  // until the change is left.
  for (const raftpb::Member* m : raft::MembersOf(conf)) {
    if (raft::IsVoterIn(conf, m->id())) {
      d->add_voters(m->id());
    } else {
      d->add_learners(m->id());
    }
  }
  auto* epoch = d->mutable_epoch();
  epoch->set_conf_version(std::max({epoch->conf_version(), conf.index(), uint64_t{1}}));
}

void GroupReplica::FollowConf() {
  const raftpb::ConfState& conf = raft_->conf();
  if (conf.voters_size() == 0) return;  // not yet known (a replica waiting for its first contact)
  SetMembers(conf, &descriptor_);
}

absl::StatusOr<uint64_t> GroupReplica::ChangeMembership(const raftpb::ConfChange& cc) {
  idle_ticks = 0;
  raft::Raft& r = *raft_;
  // Already in effect in this group (e.g. a retry after a partial failure): nothing to do.
  auto same_voters = [&] {
    if (r.conf().voters_outgoing_size() > 0 || r.conf().voters_size() != cc.voters_size()) {
      return false;
    }
    for (const auto& m : cc.voters()) {
      if (!r.IsVoter(m.id())) return false;
    }
    return true;
  };
  bool done = (cc.type() == raftpb::CONF_ADD_LEARNER && r.IsMember(cc.node_id())) ||
              (cc.type() == raftpb::CONF_PROMOTE_LEARNER && r.IsVoter(cc.node_id())) ||
              (cc.type() == raftpb::CONF_REMOVE_NODE && !r.IsMember(cc.node_id())) ||
              (cc.type() == raftpb::CONF_ENTER_JOINT && same_voters());
  if (done) return uint64_t{0};
  if (FreezeInForceOrPending()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "group ", id(), " is frozen for a merge: its membership cannot change until it thaws"));
  }
  auto p = r.ProposeConfChange(cc);
  if (!p.ok() && absl::IsFailedPrecondition(p.status()) && r.role() != raft::Role::kLeader) {
    return absl::FailedPreconditionError(absl::StrCat("not the leader; the leader is node ",
                                                      r.leader(), " at ", r.AddressOf(r.leader())));
  }
  if (!p.ok()) return p.status();
  return p->first;
}

bool GroupReplica::FreezeInForceOrPending() const {
  if (sm_->frozen_at() != 0) return true;
  // A freeze in the log not yet applied here counts too: a membership change appended after it
  // would apply while the shard is frozen. (Only data groups freeze; their unapplied tails are
  // short, and membership changes are rare.)
  const raft::Raft& r = *raft_;
  internal::Command cmd;
  for (uint64_t i = std::max(r.handed_out(), r.first_index() - 1) + 1; i <= r.last_index(); ++i) {
    const raftpb::Entry& e = r.log().At(i);
    if (e.type() == raftpb::ENTRY_NORMAL && !e.data().empty() && cmd.ParseFromString(e.data()) &&
        cmd.has_freeze()) {
      return true;
    }
  }
  return false;
}

void GroupReplica::WaitForIndex(uint64_t index, const ReadRequirement& req, ReadReady ready,
                                uint64_t read_id) {
  reads_[read_id] = PendingRead{std::max<uint64_t>(index, 1), req.deadline, std::move(ready)};
  ServeReads();
}

void GroupReplica::StartRead(const ReadRequirement& req, ReadReady ready, uint64_t read_id) {
  idle_ticks = 0;
  raft::Raft& r = *raft_;
  switch (req.consistency) {
    case v1::READ_EVENTUAL:
      ready(absl::OkStatus());
      return;
    case v1::READ_SESSION:
      // Read-your-writes: wait until this replica applied what the session has seen.
      if (sm_->applied_index() >= req.min_index) {
        ready(absl::OkStatus());
      } else {
        WaitForIndex(req.min_index, req, std::move(ready), read_id);
      }
      return;
    case v1::READ_LEASE:
      if (r.HasLease()) {
        WaitForIndex(r.commit(), req, std::move(ready), read_id);
        return;
      }
      break;  // no lease here (or the group is quiet): ReadIndex, which is stronger
    case v1::READ_BOUNDED_STALENESS:
      if (r.HasLease()) {
        WaitForIndex(r.commit(), req, std::move(ready), read_id);
        return;
      }
      // A follower that heard from the leader within the bound serves once it has applied
      // everything the leader had committed at that contact (heartbeats carry it).
      if (r.role() == raft::Role::kFollower && r.leader() != 0 &&
          options_->clock->Now() - last_leader_contact <= req.max_staleness) {
        WaitForIndex(std::max(r.commit(), leader_commit_seen), req, std::move(ready), read_id);
        return;
      }
      break;  // too stale to tell: confirm with the leader (ReadIndex)
    default:
      break;
  }
  reads_[read_id] = PendingRead{0, req.deadline, std::move(ready)};
  r.ReadIndex(read_id);
}

void GroupReplica::NoteLeaderMessage(const raftpb::Message& m, absl::Time now) {
  bool from_leader_role = m.type() == raftpb::MSG_APPEND || m.type() == raftpb::MSG_HEARTBEAT ||
                          m.type() == raftpb::MSG_SNAPSHOT;
  if (!from_leader_role || m.from() != raft_->leader()) return;
  // Fresh as of when the leader sent it (not when it arrived; it may have waited).
  absl::Time sent =
      m.sent_unix_micros() == 0
          ? now
          : std::min(now, absl::FromUnixMicros(static_cast<int64_t>(m.sent_unix_micros())));
  last_leader_contact = std::max(last_leader_contact, sent);
  uint64_t leader_commit = m.type() == raftpb::MSG_HEARTBEAT ? m.index() : m.commit();
  leader_commit_seen = std::max(leader_commit_seen, leader_commit);
}

void GroupReplica::ApplyCommitted(const raft::Ready& rd) {
  if (rd.committed.empty()) return;
  std::vector<internal::Command> commands(rd.committed.size());
  std::vector<IndexedCommand> batch;
  batch.reserve(rd.committed.size());
  bool structural = false;
  for (size_t i = 0; i < rd.committed.size(); ++i) {
    const auto& e = rd.committed[i];
    IndexedCommand ic{e.index(), e.term(), nullptr};
    if (e.type() == raftpb::ENTRY_NORMAL && !e.data().empty()) {
      if (!commands[i].ParseFromString(e.data())) {
        Fatal(absl::StrCat("group ", id(), " committed entry ", e.index(), " is not a command"));
      }
      ic.command = &commands[i];
      const internal::Command& c = commands[i];
      structural = structural || c.has_freeze() || c.has_thaw() || c.has_split() || c.has_merge() ||
                   c.has_abort_merge();
    }
    batch.push_back(ic);
  }
  // The log is durable, so the applied state need not be fsynced: after a crash the entries
  // above the applied index are applied again (deduplicated by the applied index itself). The
  // commands that change more than this shard's data are the exception: a merge relies on every
  // voter's replica being frozen (a replica that lost its applied freeze could not be absorbed
  // until it heard from its leader again), and a split or a merge creates or retires another
  // group's replica, which must not come back from a crash after the rest of the cluster moved
  // on (RocksDB's WAL is not synced by the Raft log's writes, so a lost apply could be old).
  absl::Time started = absl::Now();
  auto results = sm_->Apply(batch, /*sync=*/structural, rd.conf_state ? &*rd.conf_state : nullptr);
  double ms = absl::ToDoubleMilliseconds(absl::Now() - started);
  apply_ms[apply_slot++ % apply_ms.size()] = ms;
  if (options_->on_apply) options_->on_apply(ms / 1000.0);
  if (!results.ok()) {
    Fatal(absl::StrCat("applying committed entries: ", results.status().ToString()));
  }
  for (size_t i = 0; i < rd.committed.size(); ++i) {
    const auto& e = rd.committed[i];
    auto it = writes_.find(e.index());
    if (it == writes_.end()) continue;
    PendingWrite& w = it->second;
    if (w.term != e.term()) {
      w.done(
          absl::AbortedError("leadership changed before the write committed; it was not "
                             "applied; retry"));
      writes_.erase(it);
      continue;
    }
    WriteOutcome outcome{(*results)[i], e.index()};
    if (outcome.result.frozen()) {
      w.done(absl::UnavailableError(absl::StrCat(
          "shard (group ", id(), ") is frozen for a merge; not applied; retry shortly")));
      writes_.erase(it);
      continue;
    }
    if (outcome.result.outside_shard()) {
      // Definitely not applied: a split moved the key to another shard after it was proposed.
      w.done(absl::OutOfRangeError(absl::StrCat("the key left the shard of group ", id(),
                                                " before the write applied; retry at its shard")));
      writes_.erase(it);
      continue;
    }
    if (w.consistency == v1::WRITE_ALL) {
      w.applied = outcome;  // acknowledged when every voter applied it (CompleteAllWrites)
      continue;
    }
    w.done(outcome);
    writes_.erase(it);
  }
}

void GroupReplica::NoteReadStates(const raft::Ready& rd) {
  for (const auto& rs : rd.read_states) {
    auto it = reads_.find(rs.request_id);
    if (it != reads_.end()) it->second.index = std::max<uint64_t>(rs.index, 1);
  }
  for (uint64_t id : rd.failed_reads) {
    // No leader could confirm it (an election is under way): ask again on the next tick,
    // until the read's deadline.
    auto it = reads_.find(id);
    if (it != reads_.end()) it->second.retry = true;
  }
}

void GroupReplica::CompleteAllWrites() {
  if (raft_->role() != raft::Role::kLeader) return;
  uint64_t everywhere = raft_->MinVoterApplied();
  for (auto it = writes_.begin(); it != writes_.end() && it->first <= everywhere;) {
    if (it->second.applied) {
      it->second.done(*it->second.applied);
      it = writes_.erase(it);
    } else {
      ++it;
    }
  }
}

void GroupReplica::ReleaseWritesOfLostLeadership() {
  bool leads = raft_->role() == raft::Role::kLeader;
  if (led_ && !leads) {
    for (auto& [index, w] : writes_) {
      if (w.applied) {
        w.done(absl::FailedPreconditionError(absl::StrCat(
            "WRITE_ALL: committed and applied at version ", index,
            " by a majority, but leadership changed before every voter was seen to apply it")));
      } else {
        w.done(absl::UnavailableError(
            "leadership changed before the write was acknowledged; it may or may not apply; "
            "retry"));
      }
    }
    writes_.clear();
  }
  led_ = leads;
}

void GroupReplica::FailAll(const absl::Status& status) {
  for (auto& [index, w] : writes_) w.done(status);
  writes_.clear();
  for (auto& [rid, r] : reads_) r.ready(status);
  reads_.clear();
}

void GroupReplica::ServeReads() {
  uint64_t applied = sm_->applied_index();
  for (auto it = reads_.begin(); it != reads_.end();) {
    if (it->second.index != 0 && it->second.index <= applied) {
      it->second.ready(absl::OkStatus());
      it = reads_.erase(it);
    } else {
      ++it;
    }
  }
}

void GroupReplica::OnTick(absl::Time now) {
  for (auto& [rid, r] : reads_) {
    if (!r.retry) continue;
    r.retry = false;
    raft_->ReadIndex(rid);
  }
  // Deadlines are checked once a tick; a WRITE_ALL that is committed but still waiting must
  // answer with its distinct status before the caller's own deadline cuts the call off.
  absl::Duration margin = options_->tick + absl::Milliseconds(50);
  for (auto it = writes_.begin(); it != writes_.end();) {
    PendingWrite& w = it->second;
    if (w.deadline > now + (w.applied ? margin : absl::ZeroDuration())) {
      ++it;
      continue;
    }
    if (w.applied) {
      w.done(absl::FailedPreconditionError(
          absl::StrCat("WRITE_ALL: committed and applied at version ", it->first,
                       " by a majority, but not applied by every voter before the deadline")));
    } else {
      w.done(absl::DeadlineExceededError(
          "the write was not committed before the deadline; it may still be applied"));
    }
    it = writes_.erase(it);
  }
  for (auto it = reads_.begin(); it != reads_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    it->second.ready(it->second.retry ? absl::UnavailableError("no leader to confirm the read; "
                                                               "retry")
                                      : absl::DeadlineExceededError(
                                            "the read could not be served at the requested "
                                            "consistency before the deadline"));
    it = reads_.erase(it);
  }
}

std::optional<raftpb::SnapshotMeta> GroupReplica::CompactionDue() {
  raft::Raft& r = *raft_;
  uint64_t applied = sm_->applied_index();
  uint64_t upto = 0;
  if (applied >= r.first_index() + options_->compact_threshold) {
    upto = applied - options_->compact_retain;
  }
  // By size as well: a few thousand large entries would otherwise hold gigabytes on disk and in
  // memory. Checked cheaply first with the whole log's size.
  if (r.log_bytes() > options_->compact_bytes && applied >= r.first_index() &&
      r.LogBytesThrough(applied) > options_->compact_bytes) {
    upto = applied;
  }
  if (upto < r.first_index()) return std::nullopt;
  return r.Compact(upto);
}

}  // namespace kv::server
