#include "server/raft_driver.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/peer_transport.h"

namespace kv::server {
namespace {

// The node cannot continue without risking wrong data: stop at once (kill -9 semantics; the
// durable state is consistent and a restart recovers from it).
[[noreturn]] void Fatal(const std::string& what) {
  std::fprintf(stderr, "kvd: FATAL: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

bool FromLeaderRole(raftpb::MessageType t) {
  return t == raftpb::MSG_APPEND || t == raftpb::MSG_HEARTBEAT || t == raftpb::MSG_SNAPSHOT;
}

}  // namespace

RaftDriver::RaftDriver(storage::Engine* engine, DriverOptions options)
    : engine_(engine), options_(std::move(options)) {
  absl::MutexLock lock(&status_mu_);
  addresses_ = options_.initial_voters;
}

RaftDriver::~RaftDriver() { Stop(); }

absl::Status RaftDriver::AddGroup(uint64_t group_id, KvStateMachine* state_machine) {
  auto g = std::make_unique<Group>();
  g->id = group_id;
  g->sm = state_machine;
  g->log_store = std::make_unique<RaftLogStore>(engine_, group_id);
  auto state = g->log_store->Load();
  if (!state.ok()) return state.status();
  if (options_.force_new_cluster && !state->empty()) {
    if (auto s = ForceNewCluster(group_id, &*state); !s.ok()) return s;
  }
  if (state->empty() && !options_.join && !options_.initial_voters.empty()) {
    raftpb::ConfState voters;
    for (const auto& [id, address] : options_.initial_voters) {
      auto* m = voters.add_voters();
      m->set_id(id);
      m->set_address(address);
    }
    raft::BootstrapState b = raft::Bootstrap(voters);
    storage::WriteBatch batch(*engine_);
    g->log_store->StageBootstrap(b, &batch);
    if (auto s = engine_->Write(batch, true); !s.ok()) return s;
    state = g->log_store->Load();
    if (!state.ok()) return state.status();
  }
  raft::Config cfg;
  cfg.id = options_.node_id;
  cfg.group_id = group_id;
  cfg.election_tick = options_.election_tick;
  cfg.heartbeat_tick = options_.heartbeat_tick;
  cfg.lease_margin_ticks = options_.lease_margin_ticks;
  cfg.seed = std::random_device{}() ^ static_cast<uint64_t>(absl::GetCurrentTimeNanos());
  g->raft = std::make_unique<raft::Raft>(cfg);
  if (state_machine->applied_index() > state->snapshot.index() + state->entries.size() &&
      state_machine->applied_index() > 0 && !state->entries.empty()) {
    return absl::DataLossError(absl::StrCat("group ", group_id, " applied index ",
                                            state_machine->applied_index(),
                                            " is beyond its log; the raft state is damaged"));
  }
  g->raft->Restore(state->hard_state, state->snapshot, std::move(state->entries),
                   state_machine->applied_index());
  g->raft->SetApplied(state_machine->applied_index());
  if (uint64_t bad = g->raft->malformed_conf_change(); bad != 0) {
    return absl::DataLossError(absl::StrCat("group ", group_id, " log entry ", bad,
                                            " is a membership change that does not decode"));
  }
  groups_[group_id] = std::move(g);
  hints_[group_id] = std::make_unique<LeaderHint>();
  Publish();
  return absl::OkStatus();
}

absl::Status RaftDriver::ForceNewCluster(uint64_t group_id, PersistedRaftState* state) {
  RaftLogStore store(engine_, group_id);
  uint64_t last_index = state->snapshot.index();
  uint64_t last_term = state->snapshot.term();
  if (!state->entries.empty()) {
    last_index = state->entries.back().index();
    last_term = state->entries.back().term();
  }
  raftpb::ConfChange cc;
  cc.set_type(raftpb::CONF_FORCE_NEW_CLUSTER);
  auto* self = cc.add_initial_voters();
  self->set_id(options_.node_id);
  self->set_address(options_.peer_address);
  raft::Ready rd;
  raftpb::Entry e;
  e.set_index(last_index + 1);
  e.set_term(std::max(last_term, state->hard_state.term()));
  e.set_type(raftpb::ENTRY_CONF_CHANGE);
  e.set_data(cc.SerializeAsString());
  rd.entries.push_back(e);
  // Everything in this node's log counts as committed from now on (as etcd's
  // --force-new-cluster does): no other voter is left to disagree.
  raftpb::HardState hs = state->hard_state;
  hs.set_term(e.term());
  hs.set_commit(e.index());
  rd.hard_state = hs;
  storage::WriteBatch batch(*engine_);
  store.StageReady(rd, &batch);
  if (auto s = engine_->Write(batch, true); !s.ok()) return s;
  std::fprintf(stderr,
               "kvd: --force-new-cluster: group %lu now has node %lu as its only voter (log entry "
               "%lu); start other nodes empty with --join and add them\n",
               static_cast<unsigned long>(group_id), static_cast<unsigned long>(options_.node_id),
               static_cast<unsigned long>(e.index()));
  auto reloaded = store.Load();
  if (!reloaded.ok()) return reloaded.status();
  *state = *std::move(reloaded);
  return absl::OkStatus();
}

uint64_t RaftDriver::ClusterClock(Group& g) {
  auto now = std::chrono::steady_clock::now();
  if (g.clock_term != g.raft->term()) {
    // A new leadership continues the clock from the applied state, in its own monotonic time.
    g.clock_term = g.raft->term();
    g.clock_base_ms = g.sm->clock_ms();
    g.clock_base_at = now;
  }
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - g.clock_base_at);
  return g.clock_base_ms + static_cast<uint64_t>(elapsed.count());
}

void RaftDriver::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void RaftDriver::Stop() {
  {
    absl::MutexLock lock(&inbox_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  for (auto& [id, g] : groups_) {
    for (auto& [index, w] : g->writes) {
      w.done(absl::UnavailableError("node is shutting down; the write may or may not apply"));
    }
    g->writes.clear();
    for (auto& [rid, r] : g->reads) r.ready(absl::UnavailableError("node is shutting down"));
    g->reads.clear();
  }
}

void RaftDriver::Enqueue(std::function<void()> task) {
  absl::MutexLock lock(&inbox_mu_);
  inbox_.push_back(std::move(task));
}

RaftDriver::Group* RaftDriver::FindGroup(uint64_t id) {
  auto it = groups_.find(id);
  return it == groups_.end() ? nullptr : it->second.get();
}

void RaftDriver::Propose(uint64_t group_id, internal::Command command,
                         v1::WriteConsistency consistency, absl::Time deadline, WriteDone done) {
  Enqueue([this, group_id, command = std::move(command), consistency, deadline,
           done = std::move(done)]() mutable {
    Group* g = FindGroup(group_id);
    if (!g) {
      done(absl::NotFoundError(absl::StrCat("no group ", group_id, " on this node")));
      return;
    }
    command.set_cluster_clock_ms(ClusterClock(*g));
    auto r = g->raft->Propose(command.SerializeAsString());
    if (!r.ok()) {
      done(absl::UnavailableError(absl::StrCat(r.status().message(), "; retry")));
      return;
    }
    ++g->proposals;
    PendingWrite w;
    w.term = r->second;
    w.consistency = consistency;
    w.deadline = deadline;
    w.done = std::move(done);
    g->writes[r->first] = std::move(w);
  });
}

void RaftDriver::Read(uint64_t group_id, const ReadRequirement& requirement,
                      std::function<void(absl::Status)> ready) {
  Enqueue([this, group_id, requirement, ready = std::move(ready)]() mutable {
    Group* g = FindGroup(group_id);
    if (!g) {
      ready(absl::NotFoundError(absl::StrCat("no group ", group_id, " on this node")));
      return;
    }
    StartRead(*g, requirement, std::move(ready));
  });
}

void RaftDriver::StartRead(Group& g, const ReadRequirement& req,
                           std::function<void(absl::Status)> ready) {
  raft::Raft& r = *g.raft;
  auto wait_for = [&](uint64_t index) {
    PendingRead p{std::max<uint64_t>(index, 1), req.deadline, std::move(ready)};
    g.reads[next_read_id_++] = std::move(p);
    ServeReads(g);
  };
  switch (req.consistency) {
    case v1::READ_EVENTUAL:
      ready(absl::OkStatus());
      return;
    case v1::READ_SESSION:
      // Read-your-writes: wait until this replica applied what the session has seen.
      if (g.sm->applied_index() >= req.min_index) {
        ready(absl::OkStatus());
      } else {
        wait_for(req.min_index);
      }
      return;
    case v1::READ_LEASE:
      if (r.HasLease()) {
        wait_for(r.commit());
        return;
      }
      break;  // no lease here: fall back to ReadIndex, which is stronger
    case v1::READ_BOUNDED_STALENESS:
      if (r.HasLease()) {
        wait_for(r.commit());
        return;
      }
      // A follower that heard from the leader within the bound serves once it has applied
      // everything the leader had committed at that contact (heartbeats carry it).
      if (r.role() == raft::Role::kFollower && r.leader() != 0 &&
          absl::Now() - g.last_leader_contact <= req.max_staleness) {
        wait_for(std::max(r.commit(), g.leader_commit_seen));
        return;
      }
      break;  // too stale to tell: confirm with the leader (ReadIndex)
    default:
      break;
  }
  uint64_t id = next_read_id_++;
  g.reads[id] = PendingRead{0, req.deadline, std::move(ready)};
  r.ReadIndex(id);
}

namespace {

bool SenderAllowed(const raftpb::ConfState& conf, const std::set<uint64_t>& removed, uint64_t node,
                   bool certified) {
  if (conf.voters_size() == 0 && conf.learners_size() == 0) return true;
  for (const auto* members : {&conf.voters(), &conf.learners()}) {
    for (const auto& m : *members) {
      if (m.id() == node) return true;
    }
  }
  return certified && !removed.contains(node);
}

}  // namespace

bool RaftDriver::AcceptFrom(const Group& g, uint64_t from, bool certified, const raftpb::Message& m,
                            bool from_snapshot_stream) const {
  // A snapshot message is taken only with its streamed data, and a stream carries nothing else.
  bool is_snapshot = m.type() == raftpb::MSG_SNAPSHOT;
  if (m.from() != from || m.to() != options_.node_id || is_snapshot != from_snapshot_stream ||
      !raftpb::MessageType_IsValid(m.type())) {
    return false;
  }
  return SenderAllowed(g.raft->conf(), g.removed, from, certified);
}

void RaftDriver::Deliver(uint64_t from, bool certified, std::string client_address,
                         std::vector<raftpb::Message> messages) {
  if (!client_address.empty() && client_address.size() <= 255) {
    absl::MutexLock lock(&status_mu_);
    auto& known = client_addresses_[from];
    if (known != client_address) known = std::move(client_address);
  }
  Enqueue([this, from, certified, messages = std::move(messages)] {
    absl::Time now = absl::Now();
    for (const auto& m : messages) {
      Group* g = FindGroup(m.group_id());
      if (!g) continue;
      if (!AcceptFrom(*g, from, certified, m, /*from_snapshot_stream=*/false)) {
        ++refused_messages_;
        if (now - last_refusal_logged_ > absl::Seconds(10)) {
          last_refusal_logged_ = now;
          std::fprintf(stderr,
                       "kvd: refused peer message(s) from node %lu for group %lu (not a member, "
                       "or not addressed to this node); %lu refused so far\n",
                       static_cast<unsigned long>(from), static_cast<unsigned long>(m.group_id()),
                       static_cast<unsigned long>(refused_messages_));
        }
        continue;
      }
      g->raft->Step(m);
      if (FromLeaderRole(m.type()) && m.from() == g->raft->leader()) {
        // Fresh as of when the leader sent it (not when it arrived; it may have waited).
        absl::Time sent =
            m.sent_unix_micros() == 0
                ? now
                : std::min(now, absl::FromUnixMicros(static_cast<int64_t>(m.sent_unix_micros())));
        g->last_leader_contact = std::max(g->last_leader_contact, sent);
        uint64_t leader_commit = m.type() == raftpb::MSG_HEARTBEAT ? m.index() : m.commit();
        g->leader_commit_seen = std::max(g->leader_commit_seen, leader_commit);
      }
    }
  });
}

void RaftDriver::DeliverSnapshot(uint64_t from, bool certified, raftpb::Message message,
                                 std::string data) {
  Enqueue([this, from, certified, message = std::move(message), data = std::move(data)]() mutable {
    Group* g = FindGroup(message.group_id());
    if (!g) return;
    if (!AcceptFrom(*g, from, certified, message, /*from_snapshot_stream=*/true)) {
      ++refused_messages_;
      return;
    }
    // Data that would not install must never be accepted by Raft: once it is, the node has
    // promised to install it. Staging into a scratch batch checks every record.
    storage::WriteBatch scratch(*engine_);
    if (auto s = g->sm->StageInstall(message.snapshot(), data, &scratch); !s.ok()) {
      std::fprintf(stderr, "kvd: refused a snapshot from node %lu for group %lu: %s\n",
                   static_cast<unsigned long>(from), static_cast<unsigned long>(g->id),
                   s.ToString().c_str());
      return;
    }
    g->raft->Step(message);
    const auto& pending = g->raft->pending_snapshot();
    if (pending && pending->index() == message.snapshot().index()) {
      g->incoming_snapshot.emplace(message.snapshot(), std::move(data));
    } else if (!pending) {
      g->incoming_snapshot.reset();  // Raft turned it down (stale): do not hold its data
    }
  });
}

bool RaftDriver::IsMemberOf(uint64_t group_id, uint64_t node) const {
  absl::MutexLock lock(&status_mu_);
  auto it = status_.find(group_id);
  if (it == status_.end()) return false;
  for (const auto* members : {&it->second.conf.voters(), &it->second.conf.learners()}) {
    for (const auto& m : *members) {
      if (m.id() == node) return true;
    }
  }
  return false;
}

bool RaftDriver::MayReceiveFrom(uint64_t group_id, uint64_t node, bool certified) const {
  absl::MutexLock lock(&status_mu_);
  auto it = status_.find(group_id);
  return it != status_.end() && SenderAllowed(it->second.conf, it->second.removed, node, certified);
}

std::string RaftDriver::ClientAddressOf(uint64_t node_id) const {
  if (node_id == options_.node_id) return options_.client_address;
  absl::MutexLock lock(&status_mu_);
  auto it = client_addresses_.find(node_id);
  return it == client_addresses_.end() ? "" : it->second;
}

void RaftDriver::RunOnLoop(uint64_t group_id, std::function<void(raft::Raft*)> fn) {
  Enqueue([this, group_id, fn = std::move(fn)] {
    Group* g = FindGroup(group_id);
    fn(g ? g->raft.get() : nullptr);
  });
}

void RaftDriver::Loop() {
  // Ticks follow a monotonic clock: a wall-clock jump must not stretch a leader's lease.
  using Clock = std::chrono::steady_clock;
  const auto tick = absl::ToChronoNanoseconds(options_.tick);
  auto next_tick = Clock::now() + tick;
  while (true) {
    std::vector<std::function<void()>> tasks;
    {
      absl::MutexLock lock(&inbox_mu_);
      bool ready = false;
      for (auto& [id, g] : groups_) ready = ready || g->raft->HasReady();
      if (!ready) {
        absl::Duration wait = absl::FromChrono(next_tick - Clock::now());
        inbox_mu_.AwaitWithTimeout(
            absl::Condition(
                +[](RaftDriver* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d->inbox_mu_) {
                  return d->stopping_ || !d->inbox_.empty();
                },
                this),
            std::max(wait, absl::ZeroDuration()));
      }
      if (stopping_) return;
      tasks.swap(inbox_);
    }
    // Tick before handling requests: after a pause (SIGSTOP, a stalled VM) the ticks that were
    // missed are replayed first, so a leader whose lease ran out meanwhile knows it before it
    // answers anything.
    auto now = Clock::now();
    int due = 0;
    while (next_tick <= now && due < 4 * options_.election_tick) {
      ++due;
      next_tick += tick;
    }
    if (next_tick <= now) next_tick = now + tick;
    absl::Time wall = absl::Now();
    for (int i = 0; i < due; ++i) {
      for (auto& [id, g] : groups_) {
        g->raft->Tick();
        if (i + 1 < due) continue;
        CheckDeadlines(*g, wall);
        for (auto& [rid, r] : g->reads) {
          if (!r.retry) continue;
          r.retry = false;
          g->raft->ReadIndex(rid);
        }
      }
    }
    if (due > 0) ColocateLeadership();
    for (auto& t : tasks) t();
    HandleReadies();
    for (auto& [id, g] : groups_) ReleaseWritesOfLostLeadership(*g);
    Publish();
  }
}

void RaftDriver::ColocateLeadership() {
  Group* follower_group = FindGroup(options_.colocate_group);
  Group* anchor = FindGroup(options_.colocate_with);
  if (!follower_group || !anchor) return;
  raft::Raft& r = *follower_group->raft;
  uint64_t target = anchor->raft->leader();
  if (r.role() == raft::Role::kLeader && target != 0 && target != options_.node_id &&
      r.IsVoter(target)) {
    r.TransferLeadership(target);
  }
}

void RaftDriver::HandleReadies() {
  while (true) {
    std::vector<std::pair<Group*, raft::Ready>> readies;
    for (auto& [id, g] : groups_) {
      if (!g->raft->HasReady()) continue;
      readies.emplace_back(g.get(), g->raft->GetReady());
      if (uint64_t bad = g->raft->malformed_conf_change(); bad != 0) {
        Fatal(absl::StrCat("group ", id, " committed entry ", bad,
                           " is a membership change that does not decode"));
      }
    }
    if (readies.empty()) return;

    // Appends and heartbeats of a leader may go out before its own fsync (its entries count
    // towards commit only once persisted); everything else waits for durability.
    for (auto& [g, rd] : readies) {
      if (g->raft->role() != raft::Role::kLeader || !transport_) continue;
      std::vector<raftpb::Message> early, late;
      uint64_t sent = static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));
      for (auto& m : rd.messages) {
        bool leader_traffic = m.type() == raftpb::MSG_APPEND || m.type() == raftpb::MSG_HEARTBEAT;
        if (leader_traffic) m.set_sent_unix_micros(sent);
        (leader_traffic ? early : late).push_back(std::move(m));
      }
      transport_->Send(std::move(early));
      rd.messages = std::move(late);
    }

    storage::WriteBatch batch(*engine_);
    bool durable_state_changed = false;
    for (auto& [g, rd] : readies) {
      if (rd.snapshot) {
        if (!g->incoming_snapshot || g->incoming_snapshot->first.index() != rd.snapshot->index()) {
          Fatal("raft accepted a snapshot whose data is not here");
        }
        g->sm->BeginInstall(rd.snapshot->index());
        if (auto s = g->sm->StageInstall(*rd.snapshot, g->incoming_snapshot->second, &batch);
            !s.ok()) {
          Fatal(absl::StrCat("installing snapshot: ", s.ToString()));
        }
      }
      g->log_store->StageReady(rd, &batch);
      // A vote or a term must be durable before anyone hears of it; a commit index need not
      // (it is recomputed from a quorum after a crash), so it alone does not cost an fsync.
      bool vote_or_term = rd.hard_state && (rd.hard_state->term() != g->synced_term ||
                                            rd.hard_state->vote() != g->synced_vote);
      durable_state_changed =
          durable_state_changed || vote_or_term || rd.snapshot || !rd.entries.empty();
      if (rd.hard_state) {
        g->synced_term = rd.hard_state->term();
        g->synced_vote = rd.hard_state->vote();
      }
      g->entries_persisted += rd.entries.size();
    }
    if (batch.Count() > 0) {
      bool sync = options_.sync && durable_state_changed;
      absl::Time started = absl::Now();
      if (auto s = engine_->Write(batch, sync); !s.ok()) {
        Fatal(absl::StrCat("persisting raft state: ", s.ToString()));
      }
      if (sync) {
        double ms = absl::ToDoubleMilliseconds(absl::Now() - started);
        if (options_.on_log_append) options_.on_log_append(ms / 1000.0);
        for (auto& [g, rd] : readies) {  // one fsync shared by every group
          ++g->fsyncs;
          g->fsync_ms[g->fsync_slot++ % g->fsync_ms.size()] = ms;
        }
      }
    }

    for (auto& [g, rd] : readies) {
      if (rd.snapshot || rd.conf_state) g->conf_dirty = true;
      if (rd.snapshot) {
        if (auto s = g->sm->Load(); !s.ok()) Fatal(absl::StrCat("reloading: ", s.ToString()));
        ++g->snapshots_installed;
        g->incoming_snapshot.reset();
        // Writes this node proposed while it led are answered by ReleaseWritesOfLostLeadership
        // at the end of this iteration: a node installs snapshots only as a follower.
      }
      if (transport_ && !rd.messages.empty()) transport_->Send(std::move(rd.messages));
      ApplyCommitted(*g, rd);
      for (const auto& rs : rd.read_states) {
        auto it = g->reads.find(rs.request_id);
        if (it != g->reads.end()) it->second.index = std::max<uint64_t>(rs.index, 1);
      }
      for (uint64_t id : rd.failed_reads) {
        // No leader could confirm it (an election is under way): ask again on the next tick,
        // until the read's deadline.
        auto it = g->reads.find(id);
        if (it != g->reads.end()) it->second.retry = true;
      }
      for (uint64_t peer : rd.snapshot_requests) {
        raftpb::Message m;
        m.set_type(raftpb::MSG_SNAPSHOT);
        m.set_group_id(g->id);
        m.set_from(options_.node_id);
        m.set_to(peer);
        m.set_term(g->raft->term());
        std::string data;
        uint64_t group_id = g->id;
        auto report = [this, group_id, peer](bool ok) {
          RunOnLoop(group_id, [peer, ok](raft::Raft* r) {
            if (r) r->ReportSnapshot(peer, ok);
          });
        };
        if (!transport_ || !g->sm->BuildSnapshot(m.mutable_snapshot(), &data).ok()) {
          g->raft->ReportSnapshot(peer, false);
          continue;
        }
        ++g->snapshots_sent;
        transport_->SendSnapshot(std::move(m), std::move(data), report);
      }
      g->raft->Advance(rd);
      g->raft->SetApplied(g->sm->applied_index());
      ServeReads(*g);
      CompleteAllWrites(*g);
      MaybeCompact(*g);
    }
  }
}

void RaftDriver::ApplyCommitted(Group& g, const raft::Ready& rd) {
  if (rd.committed.empty()) return;
  std::vector<internal::Command> commands(rd.committed.size());
  std::vector<IndexedCommand> batch;
  batch.reserve(rd.committed.size());
  for (size_t i = 0; i < rd.committed.size(); ++i) {
    const auto& e = rd.committed[i];
    IndexedCommand ic{e.index(), e.term(), nullptr};
    if (e.type() == raftpb::ENTRY_NORMAL && !e.data().empty()) {
      if (!commands[i].ParseFromString(e.data())) {
        Fatal(absl::StrCat("committed entry ", e.index(), " is not a command"));
      }
      ic.command = &commands[i];
    }
    batch.push_back(ic);
  }
  // The log is durable, so the applied state need not be fsynced: after a crash the entries
  // above the applied index are applied again (deduplicated by the applied index itself).
  absl::Time started = absl::Now();
  auto results = g.sm->Apply(batch, /*sync=*/false, rd.conf_state ? &*rd.conf_state : nullptr);
  double apply_ms = absl::ToDoubleMilliseconds(absl::Now() - started);
  g.apply_ms[g.apply_slot++ % g.apply_ms.size()] = apply_ms;
  if (options_.on_apply) options_.on_apply(apply_ms / 1000.0);
  if (!results.ok())
    Fatal(absl::StrCat("applying committed entries: ", results.status().ToString()));
  for (size_t i = 0; i < rd.committed.size(); ++i) {
    const auto& e = rd.committed[i];
    auto it = g.writes.find(e.index());
    if (it == g.writes.end()) continue;
    PendingWrite& w = it->second;
    if (w.term != e.term()) {
      w.done(
          absl::AbortedError("leadership changed before the write committed; it was not "
                             "applied; retry"));
      g.writes.erase(it);
      continue;
    }
    WriteOutcome outcome{(*results)[i], e.index()};
    if (w.consistency == v1::WRITE_ALL) {
      w.applied = outcome;  // acknowledged when every voter applied it (CompleteAllWrites)
      continue;
    }
    w.done(outcome);
    g.writes.erase(it);
  }
}

void RaftDriver::CompleteAllWrites(Group& g) {
  if (g.raft->role() != raft::Role::kLeader) return;
  uint64_t everywhere = g.raft->MinVoterApplied();
  for (auto it = g.writes.begin(); it != g.writes.end() && it->first <= everywhere;) {
    if (it->second.applied) {
      it->second.done(*it->second.applied);
      it = g.writes.erase(it);
    } else {
      ++it;
    }
  }
}

void RaftDriver::ReleaseWritesOfLostLeadership(Group& g) {
  bool leads = g.raft->role() == raft::Role::kLeader;
  if (g.led && !leads) {
    for (auto& [index, w] : g.writes) {
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
    g.writes.clear();
  }
  g.led = leads;
}

void RaftDriver::ServeReads(Group& g) {
  uint64_t applied = g.sm->applied_index();
  for (auto it = g.reads.begin(); it != g.reads.end();) {
    if (it->second.index != 0 && it->second.index <= applied) {
      it->second.ready(absl::OkStatus());
      it = g.reads.erase(it);
    } else {
      ++it;
    }
  }
}

void RaftDriver::CheckDeadlines(Group& g, absl::Time now) {
  // Deadlines are checked once a tick; a WRITE_ALL that is committed but still waiting must
  // answer with its distinct status before the caller's own deadline cuts the call off.
  absl::Duration margin = options_.tick + absl::Milliseconds(50);
  for (auto it = g.writes.begin(); it != g.writes.end();) {
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
    it = g.writes.erase(it);
  }
  for (auto it = g.reads.begin(); it != g.reads.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    it->second.ready(it->second.retry ? absl::UnavailableError("no leader to confirm the read; "
                                                               "retry")
                                      : absl::DeadlineExceededError(
                                            "the read could not be served at the requested "
                                            "consistency before the deadline"));
    it = g.reads.erase(it);
  }
}

void RaftDriver::MaybeCompact(Group& g) {
  uint64_t applied = g.sm->applied_index();
  uint64_t upto = 0;
  if (applied >= g.raft->first_index() + options_.compact_threshold) {
    upto = applied - options_.compact_retain;
  }
  // By size as well: a few thousand large entries would otherwise hold gigabytes on disk and in
  // memory. Checked cheaply first with the whole log's size.
  if (g.raft->log_bytes() > options_.compact_bytes && applied >= g.raft->first_index() &&
      g.raft->LogBytesThrough(applied) > options_.compact_bytes) {
    upto = applied;
  }
  if (upto < g.raft->first_index()) return;
  auto meta = g.raft->Compact(upto);
  if (!meta) return;
  storage::WriteBatch batch(*engine_);
  g.log_store->StageCompaction(*meta, &batch);
  // Not synced: losing it only leaves a longer log behind.
  if (auto s = engine_->Write(batch, false); !s.ok()) Fatal(s.ToString());
}

void RaftDriver::Publish() {
  absl::MutexLock lock(&status_mu_);
  for (auto& [id, g] : groups_) {
    const raft::Raft& r = *g->raft;
    GroupStatus& s = status_[id];
    s.group_id = id;
    s.role = r.role();
    s.term = r.term();
    s.leader_id = r.leader();
    s.commit = r.commit();
    s.applied = g->sm->applied_index();
    s.first_index = r.first_index();
    s.last_index = r.last_index();
    if (g->conf_dirty) {
      g->conf_dirty = false;
      for (const auto* members : {&s.conf.voters(), &s.conf.learners()}) {
        for (const auto& m : *members) {
          if (!r.IsMember(m.id())) g->removed.insert(m.id());
        }
      }
      for (const auto* members : {&r.conf().voters(), &r.conf().learners()}) {
        for (const auto& m : *members) g->removed.erase(m.id());
      }
      s.removed = g->removed;
      s.conf = r.conf();
      for (const auto& m : s.conf.voters()) addresses_[m.id()] = m.address();
      for (const auto& m : s.conf.learners()) addresses_[m.id()] = m.address();
    }
    s.peers = r.role() == raft::Role::kLeader ? r.Peers() : std::vector<raft::PeerStatus>{};
    // Clients are told the leader's client address (peers know each other by peer address).
    if (s.leader_id == options_.node_id) {
      s.leader_address = options_.client_address;
    } else {
      auto addr = client_addresses_.find(s.leader_id);
      s.leader_address = addr == client_addresses_.end() ? "" : addr->second;
    }
    LeaderHint& hint = *hints_.at(id);
    if (hint.leader_id.load(std::memory_order_relaxed) != s.leader_id ||
        hint.is_leader.load(std::memory_order_relaxed) != (s.role == raft::Role::kLeader) ||
        (!hint.address_known.load(std::memory_order_relaxed) && !s.leader_address.empty())) {
      absl::MutexLock leader_lock(&hint.mu);
      hint.address = s.leader_address;
      hint.address_known.store(!s.leader_address.empty(), std::memory_order_relaxed);
      hint.leader_id.store(s.leader_id, std::memory_order_relaxed);
      hint.is_leader.store(s.role == raft::Role::kLeader, std::memory_order_relaxed);
    }
    s.fsyncs = g->fsyncs;
    s.entries_persisted = g->entries_persisted;
    auto p99 = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() * 99 / 100];
    };
    if (g->fsync_slot > 0 && g->fsync_slot % 16 == 0) s.fsync_p99_ms = p99(g->fsync_ms);
    if (g->apply_slot > 0 && g->apply_slot % 16 == 0) s.apply_p99_ms = p99(g->apply_ms);
    // -1: never heard from a leader since start.
    s.heartbeat_age_ms = r.role() == raft::Role::kLeader ? 0
                         : g->last_leader_contact == absl::InfinitePast()
                             ? -1
                             : absl::ToDoubleMilliseconds(absl::Now() - g->last_leader_contact);
    if (r.leader() != g->last_leader || r.term() != g->logged_term) {
      // One line per leader change or new term: what an operator reads first after a failure.
      std::fprintf(
          stderr, "kvd: %s group %lu term %lu: %s, leader %lu\n",
          absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
          static_cast<unsigned long>(id), static_cast<unsigned long>(r.term()),
          raft::RoleName(r.role()), static_cast<unsigned long>(r.leader()));
      g->logged_term = r.term();
      if (r.leader() != g->last_leader && r.leader() != 0) ++g->leader_changes;
      g->last_leader = r.leader();
    }
    s.proposals = g->proposals;
    s.leader_changes = g->leader_changes;
    s.snapshots_sent = g->snapshots_sent;
    s.snapshots_installed = g->snapshots_installed;
    s.peer_refused = refused_messages_ + peer_refused_.load(std::memory_order_relaxed);
  }
}

GroupStatus RaftDriver::Status(uint64_t group_id) const {
  absl::MutexLock lock(&status_mu_);
  auto it = status_.find(group_id);
  return it == status_.end() ? GroupStatus{} : it->second;
}

const RaftDriver::LeaderHint* RaftDriver::Hint(uint64_t group_id) const {
  auto it = hints_.find(group_id);
  return it == hints_.end() ? nullptr : it->second.get();
}

bool RaftDriver::IsLeader(uint64_t group_id) const {
  const LeaderHint* h = Hint(group_id);
  return h && h->is_leader.load(std::memory_order_relaxed);
}

uint64_t RaftDriver::LeaderId(uint64_t group_id) const {
  const LeaderHint* h = Hint(group_id);
  return h ? h->leader_id.load(std::memory_order_relaxed) : 0;
}

std::string RaftDriver::LeaderAddress(uint64_t group_id) const {
  const LeaderHint* h = Hint(group_id);
  if (!h) return "";
  absl::MutexLock lock(&h->mu);
  return h->address;
}

std::string RaftDriver::AddressOf(uint64_t node_id) const {
  absl::MutexLock lock(&status_mu_);
  auto it = addresses_.find(node_id);
  return it == addresses_.end() ? "" : it->second;
}

}  // namespace kv::server
