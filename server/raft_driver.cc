#include "server/raft_driver.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "raft/confchange.h"
#include "server/logging.h"

namespace kv::server {

RaftDriver::RaftDriver(storage::Engine* engine, DriverOptions options,
                       Store::StateMachineFactory factory)
    : engine_(engine),
      options_(WithClock(std::move(options))),
      board_(options_.node_id, options_.client_address),
      store_(engine, &options_, std::move(factory),
             [this](uint64_t id) {
               if (id == options_.node_id) return options_.peer_address;
               return board_.AddressOf(id);
             }),
      liveness_(options_.tick * options_.election_tick) {
  for (const auto& [id, address] : options_.initial_voters) board_.SetAddress(id, address);
}

RaftDriver::~RaftDriver() { Stop(); }

absl::Status RaftDriver::Open(const std::vector<std::pair<uint64_t, uint64_t>>& first) {
  if (auto s = store_.Open(); !s.ok()) return s;
  for (const auto& [group_id, shard_id] : first) {
    if (auto r = store_.OpenOrBootstrap(group_id, shard_id); !r.ok()) return r.status();
  }
  // Every interrupted install finished as its group loaded; what is left there was being
  // received when the node stopped.
  std::error_code ec;
  std::filesystem::remove_all(std::filesystem::path(engine_->path()) / kIncomingSnapshotsDir, ec);
  for (auto& [id, g] : store_.replicas()) {
    Publish(*g);
    awake_.insert(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SnapshotSink>> RaftDriver::OpenSnapshotSink(uint64_t group_id,
                                                                           uint64_t from) const {
  // A new directory for every stream, so a restarted stream never meets its predecessor's files.
  static std::atomic<uint64_t> streams{0};
  uint64_t stream = streams.fetch_add(1, std::memory_order_relaxed);
  std::string dir =
      absl::StrCat(std::string(kIncomingSnapshotsDir), "/g", group_id, "-n", from, "-", stream);
  return SnapshotSink::Create(engine_, group_id, std::move(dir));
}

std::optional<internal::GroupDescriptor> RaftDriver::DescriptorOf(uint64_t group_id) {
  GroupReplica* g = Find(group_id);
  if (!g) return std::nullopt;
  return g->descriptor();
}

KvStateMachine* RaftDriver::StateMachineOf(uint64_t group_id) {
  GroupReplica* g = Find(group_id);
  return g ? &g->state_machine() : nullptr;
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
  for (auto& [id, g] : store_.replicas()) {
    g->FailAll(absl::UnavailableError("node is shutting down; a write may or may not apply"));
  }
}

void RaftDriver::Enqueue(std::function<void()> task) {
  absl::MutexLock lock(&inbox_mu_);
  inbox_.push_back(std::move(task));
}

void RaftDriver::ShardDescriptors(
    bool led_only, std::function<void(std::vector<internal::GroupDescriptor>)> done) {
  Enqueue([this, led_only, done = std::move(done)] {
    std::vector<internal::GroupDescriptor> led;
    for (auto& [id, g] : store_.replicas()) {
      bool leads = g->raft().role() == raft::Role::kLeader;
      if ((leads || !led_only) && !g->descriptor().span_end().empty()) {
        // The span and generation as the shard's own state has them now (a snapshot, a
        // thaw or an aborted merge may have moved them on since the descriptor was set).
        internal::GroupDescriptor d = g->descriptor();
        const KvStateMachine& sm = g->state_machine();
        d.set_span_start(sm.scope().span.start);
        d.set_span_end(sm.scope().span.end);
        d.mutable_epoch()->set_generation(sm.generation());
        led.push_back(std::move(d));
      }
    }
    done(std::move(led));
  });
}

void RaftDriver::MergeStates(std::function<void(std::vector<MergeState>)> done) {
  Enqueue([this, done = std::move(done)] {
    std::vector<MergeState> states;
    for (auto& [id, g] : store_.replicas()) {
      if (g->descriptor().span_end().empty()) continue;
      const KvStateMachine& sm = g->state_machine();
      MergeState m;
      m.group_id = id;
      m.leads = g->raft().role() == raft::Role::kLeader;
      m.mergeable = sm.Mergeable();
      m.keyspace_id = sm.scope().keyspace.id;
      m.span_start = sm.scope().span.start;
      m.span_end = sm.scope().span.end;
      m.generation = sm.generation();
      m.applied = sm.applied_index();
      const raftpb::ConfState& conf = g->raft().conf();
      if (conf.learners_size() == 0 && conf.voters_outgoing_size() == 0) {
        for (const auto& v : conf.voters()) m.voters.push_back(v.id());
        std::sort(m.voters.begin(), m.voters.end());
      }
      m.frozen_at = sm.frozen_at();
      m.frozen_into = sm.frozen_into();
      for (const auto& settled : sm.settled()) {
        if (settled.merged()) m.merged.push_back(settled.absorbed_group_id());
      }
      states.push_back(std::move(m));
    }
    done(std::move(states));
  });
}

DriverCounters RaftDriver::counters() const {
  DriverCounters c;
  c.groups = group_count_.load(std::memory_order_relaxed);
  c.quiesced = quiesced_count_.load(std::memory_order_relaxed);
  c.messages_sent = messages_sent_.load(std::memory_order_relaxed);
  c.beats_sent = beats_sent_.load(std::memory_order_relaxed);
  c.snapshots_sent = snapshots_sent_.load(std::memory_order_relaxed);
  c.snapshots_delegated = snapshots_delegated_.load(std::memory_order_relaxed);
  c.snapshots_sent_for_leader = snapshots_sent_for_leader_.load(std::memory_order_relaxed);
  return c;
}

namespace {
absl::Status NoGroup(uint64_t group_id) {
  return absl::NotFoundError(absl::StrCat("no group ", group_id, " on this node"));
}
// For a client's write or read: the replica was here when the request was routed and is gone
// now (moved away, or removed), which is no answer about the key: the client asks again.
absl::Status ReplicaGone(uint64_t group_id) {
  return absl::UnavailableError(
      absl::StrCat("no replica of group ", group_id, " on this node any more (moved); retry"));
}
}  // namespace

void RaftDriver::Propose(uint64_t group_id, internal::Command command,
                         v1::WriteConsistency consistency, absl::Time deadline, WriteDone done) {
  Enqueue([this, group_id, command = std::move(command), consistency, deadline,
           done = std::move(done)]() mutable {
    GroupReplica* g = Find(group_id);
    if (!g) return done(ReplicaGone(group_id));
    g->Propose(std::move(command), consistency, deadline, std::move(done));
    Touch(group_id);
  });
}

void RaftDriver::Read(uint64_t group_id, const ReadRequirement& requirement,
                      GroupReplica::ReadReady ready) {
  Enqueue([this, group_id, requirement, ready = std::move(ready)]() mutable {
    GroupReplica* g = Find(group_id);
    if (!g) return ready(ReplicaGone(group_id));
    g->StartRead(requirement, std::move(ready), next_read_id_++);
    Touch(group_id);
  });
}

void RaftDriver::OpenBackup(uint64_t group_id, absl::Time deadline,
                            std::function<void(absl::StatusOr<BackupSource>)> done) {
  ReadRequirement linearizable;
  linearizable.consistency = v1::READ_LINEARIZABLE;
  linearizable.deadline = deadline;
  Read(group_id, linearizable, [this, group_id, done = std::move(done)](absl::Status ready) {
    if (!ready.ok()) return done(ready);
    GroupReplica* g = Find(group_id);
    if (!g) return done(NoGroup(group_id));
    BackupSource b;
    auto source = g->state_machine().OpenSnapshot(&b.meta);
    if (!source.ok()) return done(source.status());
    b.source = *std::move(source);
    b.descriptor = g->descriptor();
    b.descriptor.mutable_epoch()->set_generation(g->state_machine().generation());
    done(std::move(b));
  });
}

void RaftDriver::ChangeMembership(uint64_t group_id, raftpb::ConfChange cc,
                                  std::function<void(absl::StatusOr<uint64_t>)> done) {
  Enqueue([this, group_id, cc = std::move(cc), done = std::move(done)] {
    GroupReplica* g = Find(group_id);
    if (!g) return done(NoGroup(group_id));
    done(g->ChangeMembership(cc));
    Touch(group_id);
  });
}

void RaftDriver::WaitForApplied(uint64_t group_id, uint64_t index, absl::Time deadline,
                                GroupReplica::ReadReady done) {
  // A session read is exactly that: ready once the replica applied what the session saw.
  ReadRequirement req;
  req.consistency = v1::READ_SESSION;
  req.min_index = index;
  req.deadline = deadline;
  Read(group_id, req, std::move(done));
}

void RaftDriver::TransferLeadership(uint64_t group_id, uint64_t to) {
  Enqueue([this, group_id, to] {
    if (GroupReplica* g = Find(group_id)) {
      g->raft().TransferLeadership(to);
      Touch(group_id);
    }
  });
}

void RaftDriver::CreateGroup(internal::GroupDescriptor descriptor, ReplicaOrigin origin,
                             std::function<void(absl::Status)> done) {
  Enqueue([this, descriptor = std::move(descriptor), origin, done = std::move(done)] {
    absl::Status s = CreateNow(descriptor, origin);
    if (done) done(s);
  });
}

void RaftDriver::DestroyGroup(uint64_t group_id, std::function<void(absl::Status)> done) {
  Enqueue([this, group_id, done = std::move(done)] {
    absl::Status s = DestroyNow(group_id);
    if (done) done(s);
  });
}

absl::Status RaftDriver::CreateNow(const internal::GroupDescriptor& descriptor,
                                   const ReplicaOrigin& origin) {
  auto r = store_.Create(descriptor, origin);
  if (!r.ok()) return r.status();
  logging::Info(logging::Group{descriptor.group_id()}, "replica created");
  awake_.insert(descriptor.group_id());
  Touch(descriptor.group_id());
  peers_dirty_ = true;
  return absl::OkStatus();
}

absl::Status RaftDriver::DestroyNow(uint64_t group_id) {
  if (auto s = store_.Destroy(group_id); !s.ok()) return s;
  logging::Info(logging::Group{group_id}, "replica destroyed");
  Forget(group_id);
  return absl::OkStatus();
}

void RaftDriver::Reconcile(uint64_t group_id, std::optional<internal::GroupDescriptor> descriptor) {
  Enqueue([this, group_id, descriptor = std::move(descriptor)] {
    bool named = false, voter = false;
    if (descriptor) {
      for (uint64_t id : descriptor->voters()) voter = voter || id == options_.node_id;
      named = voter;
      for (uint64_t id : descriptor->learners()) named = named || id == options_.node_id;
    }
    GroupReplica* here = Find(group_id);
    bool hosted = here != nullptr;
    if (here && named && descriptor->epoch().conf_version() > here->vouched_conf_version) {
      here->vouched.clear();
      here->vouched.insert(descriptor->voters().begin(), descriptor->voters().end());
      here->vouched.insert(descriptor->learners().begin(), descriptor->learners().end());
      here->vouched_conf_version = descriptor->epoch().conf_version();
      here->conf_dirty = true;  // published with the membership
      Touch(group_id);
    }
    absl::Status s;
    if (named && !hosted && descriptor->split_from() != 0) {
      // A split child is made by applying the split in its parent. While any replica here
      // still owns part of the child's span (the parent, or an ancestor, not yet split here), it
      // must not exist: that replica may still write those keys, over the child's snapshot.
      // Once none does (the split arrived as a snapshot that shrank the parent), it is created
      // empty, for the child's leader to fill.
      sharding::KeyRange span{descriptor->span_start(), descriptor->span_end()};
      for (auto& [id, r] : store_.replicas()) {
        if (r->state_machine().scope().span.Overlaps(span)) return;
      }
      // Destroyed here before (a move took it away), only a newer membership brings it back.
      if (store_.MayRecreate(*descriptor)) {
        ReplicaOrigin empty;
        empty.kind = ReplicaOrigin::Kind::kEmpty;
        s = CreateNow(*descriptor, empty);
      }
    } else if (named && !hosted && store_.MayRecreate(*descriptor)) {
      // A first voter starts from the descriptor's membership, exactly as the others do; anyone
      // added later starts empty and is caught up by the leader.
      ReplicaOrigin origin;
      origin.kind = voter && descriptor->epoch().conf_version() <= 1
                        ? ReplicaOrigin::Kind::kBootstrap
                        : ReplicaOrigin::Kind::kEmpty;
      s = CreateNow(*descriptor, origin);
    } else if (!named && hosted && here->state_machine().frozen_at() != 0) {
      // Frozen for a merge whose survivor already took its span over elsewhere: its data is the
      // survivor's, and applying the merge here retires it (ShardMerger thaws it otherwise).
    } else if (!named && hosted) {
      s = DestroyNow(group_id);
    }
    if (!s.ok()) {
      logging::Error(logging::Group{group_id}, "cannot {} the replica: {}",
                     named ? "create" : "destroy", s.ToString());
    }
  });
}

bool RaftDriver::AcceptFrom(GroupReplica& g, uint64_t from, bool certified,
                            const raftpb::Message& m, bool from_snapshot_stream) const {
  // A snapshot message is taken only with its streamed data, and a stream carries nothing else.
  bool is_snapshot = m.type() == raftpb::MSG_SNAPSHOT;
  if (m.to() != options_.node_id || is_snapshot != from_snapshot_stream ||
      !raftpb::MessageType_IsValid(m.type())) {
    return false;
  }
  // Only a snapshot may name another sender than the node that sent it: a replica streams it in
  // its leader's name (delegated), and the leader it names must be one this replica may hear.
  if (m.from() != from && (!is_snapshot || m.from() == options_.node_id ||
                           !SenderAllowed(g.raft().conf(), g.removed, g.Vouched(), m.from(),
                                          /*certified=*/false))) {
    return false;
  }
  return SenderAllowed(g.raft().conf(), g.removed, g.Vouched(), from, certified);
}

void RaftDriver::NoteRefused(uint64_t from, uint64_t group_id, absl::Time now) {
  ++refused_messages_;
  if (now - last_refusal_logged_ > absl::Seconds(10)) {
    last_refusal_logged_ = now;
    logging::Warning(logging::Group{group_id},
                     "refused peer message(s) from node {} (not a member, or not addressed to "
                     "this node); {} refused so far",
                     from, refused_messages_);
  }
}

void RaftDriver::AnswerUnknownGroup(uint64_t from, const raftpb::Message& m, absl::Time now) {
  if (m.type() == raftpb::MSG_GROUP_UNKNOWN || m.to() != options_.node_id) return;
  // At most one answer per sender and group every few seconds: a sender that keeps trying
  // must not turn this node into an amplifier.
  auto& last = unknown_answered_[{from, m.group_id()}];
  if (now - last < absl::Seconds(5)) return;
  last = now;
  if (unknown_answered_.size() > 100000) unknown_answered_.clear();
  raftpb::Message gone;
  gone.set_type(raftpb::MSG_GROUP_UNKNOWN);
  gone.set_group_id(m.group_id());
  gone.set_from(options_.node_id);
  gone.set_to(from);
  gone.set_term(m.term());
  SendMessages({std::move(gone)});
}

void RaftDriver::Deliver(uint64_t from, bool certified, std::string client_address,
                         std::vector<raftpb::Message> messages) {
  board_.LearnClientAddress(from, std::move(client_address));
  Enqueue([this, from, certified, messages = std::move(messages)] {
    absl::Time now = clock().Now();
    liveness_.Heard(from, LivenessNow());
    for (const auto& m : messages) {
      if (m.group_id() == kNodeLivenessGroup) continue;  // the beat itself was the news
      GroupReplica* g = Find(m.group_id());
      if (!g) {
        AnswerUnknownGroup(from, m, now);
        continue;
      }
      if (m.type() == raftpb::MSG_GROUP_UNKNOWN) {
        if (m.from() == from && g->raft().IsMember(from) && g->gone_on.insert(from).second) {
          logging::Info(logging::Group{g->id()},
                        "node {} has no replica of it (destroyed or never created there)", from);
          Touch(g->id());
        }
        continue;
      }
      if (!AcceptFrom(*g, from, certified, m, /*from_snapshot_stream=*/false)) {
        NoteRefused(from, m.group_id(), now);
        continue;
      }
      if (g->gone_on.erase(from) > 0) Touch(g->id());
      if (m.type() == raftpb::MSG_SNAPSHOT_DELEGATE) {
        StreamSnapshotFor(*g, m);
        continue;
      }
      if (m.type() == raftpb::MSG_SNAPSHOT_STATUS) {
        DelegatedSnapshotDone(*g, m);
        continue;
      }
      g->raft().Step(m);
      g->NoteLeaderMessage(m, now);
      Touch(g->id());
    }
  });
}

void RaftDriver::DeliverSnapshot(uint64_t from, bool certified, raftpb::Message message,
                                 std::unique_ptr<ReceivedSnapshot> snapshot) {
  // Shared because the task must be copyable; the files go when the last holder lets go, unless
  // an install record names them.
  std::shared_ptr<ReceivedSnapshot> held(std::move(snapshot));
  Enqueue([this, from, certified, message = std::move(message), held]() mutable {
    absl::Time now = clock().Now();
    liveness_.Heard(from, LivenessNow());
    GroupReplica* g = Find(message.group_id());
    if (!g) return AnswerUnknownGroup(from, message, now);
    if (!AcceptFrom(*g, from, certified, message, /*from_snapshot_stream=*/true)) {
      return NoteRefused(from, message.group_id(), now);
    }
    // Data that would not install must never be accepted by Raft: once it is, the node has
    // promised to install it. The sink checked every record; the span is checked here.
    if (auto s = g->state_machine().CheckSnapshot(*held); !s.ok()) {
      logging::Warning(logging::Group{g->id()}, "refused a snapshot from node {}: {}", from,
                       s.ToString());
      return;
    }
    g->raft().Step(message);
    const auto& pending = g->raft().pending_snapshot();
    if (pending && pending->index() == message.snapshot().index()) {
      g->incoming_snapshot.emplace(GroupReplica::IncomingSnapshot{message.snapshot(), held});
    } else if (!pending) {
      g->incoming_snapshot.reset();  // Raft turned it down (stale): do not hold its data
    }
    Touch(g->id());
  });
}

void RaftDriver::SendMessages(std::vector<raftpb::Message> messages) {
  if (!transport_ || messages.empty()) return;
  messages_sent_.fetch_add(messages.size(), std::memory_order_relaxed);
  transport_->Send(std::move(messages));
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
      absl::Duration wait = absl::FromChrono(next_tick - Clock::now());
      inbox_mu_.AwaitWithTimeout(
          absl::Condition(
              +[](RaftDriver* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d->inbox_mu_) {
                return d->stopping_ || !d->inbox_.empty();
              },
              this),
          std::max(wait, absl::ZeroDuration()));
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
    Iterate(due, tasks);
  }
}

bool RaftDriver::CrashesAt(DriverOptions::CrashPoint point) {
  if (!options_.crash_here || !options_.crash_here(point)) return false;
  crashed_ = true;
  return true;
}

void RaftDriver::RunOnce(int due_ticks) {
  if (crashed_) return;
  std::vector<std::function<void()>> tasks;
  {
    absl::MutexLock lock(&inbox_mu_);
    tasks.swap(inbox_);
  }
  Iterate(due_ticks, tasks);
}

void RaftDriver::Iterate(int due, std::vector<std::function<void()>>& tasks) {
  if (due > 0) {
    TickAwakeGroups(due);
    BeatAndWatchPeers(LivenessNow());
    ColocateLeadership();
    ExpireDelegations();
  }
  for (auto& t : tasks) t();
  HandleReadies();
  if (crashed_) return;
  FinishIteration();
}

void RaftDriver::TickAwakeGroups(int due) {
  absl::Time wall = clock().Now();
  ticks_ += static_cast<uint64_t>(due);
  for (uint64_t id : awake_) {
    GroupReplica* g = Find(id);
    if (!g) continue;
    raft::Raft& r = g->raft();
    for (int i = 0; i < due && !r.quiesced(); ++i) r.Tick();
    g->OnTick(wall);
    g->idle_ticks += due;
    if (options_.quiesce_after_ticks > 0 && r.role() == raft::Role::kLeader && !r.quiesced() &&
        g->idle_ticks >= options_.quiesce_after_ticks && !g->has_waiting_work()) {
      std::set<uint64_t> members;
      for (const raftpb::Member* m : raft::MembersOf(r.conf())) {
        if (m->id() != options_.node_id) members.insert(m->id());
      }
      r.Quiesce(liveness_.Unreachable(members, LivenessNow()));
    }
    Touch(id);
  }
}

absl::Duration RaftDriver::SilenceOf(uint64_t node) const {
  absl::Time now = LivenessNow();
  absl::MutexLock lock(&silence_mu_);
  auto it = silence_.find(node);
  if (it == silence_.end()) return absl::InfiniteDuration();
  return it->second + (now - silence_at_);
}

void RaftDriver::BeatAndWatchPeers(absl::Time now) {
  if (peers_dirty_) RecomputePeers();
  for (uint64_t peer : peers_) liveness_.Track(peer, now);
  {
    absl::MutexLock lock(&silence_mu_);
    silence_.clear();
    for (uint64_t peer : peers_) silence_[peer] = liveness_.SinceHeard(peer, now);
    silence_at_ = now;
  }
  if (options_.beat_ticks > 0 && ticks_ % static_cast<uint64_t>(options_.beat_ticks) == 0) {
    std::vector<raftpb::Message> beats;
    for (uint64_t peer : peers_) {
      raftpb::Message beat;
      beat.set_type(raftpb::MSG_HEARTBEAT);
      beat.set_group_id(kNodeLivenessGroup);
      beat.set_from(options_.node_id);
      beat.set_to(peer);
      beats.push_back(std::move(beat));
    }
    beats_sent_.fetch_add(beats.size(), std::memory_order_relaxed);
    SendMessages(std::move(beats));
  }
  // Wake every quiet group a silent node is in: its followers must be able to elect, and its
  // leaders must find out whether they still have a quorum. Wake them again when it returns: a
  // leader that went quiet without it must catch it up, and if it is a quiet leader itself it may
  // have been deposed meanwhile (only a message at a newer term tells it).
  std::vector<uint64_t> changed = liveness_.TakeNewlyLapsed(now);
  for (uint64_t back : liveness_.TakeReturned()) changed.push_back(back);
  for (uint64_t node : changed) {
    for (auto& [id, g] : store_.replicas()) {
      if (g->raft().quiesced() && g->raft().IsMember(node)) {
        g->raft().Unquiesce();
        awake_.insert(id);
        Touch(id);
      }
    }
  }
}

void RaftDriver::RecomputePeers() {
  peers_.clear();
  for (auto& [id, g] : store_.replicas()) {
    for (const raftpb::Member* m : raft::MembersOf(g->raft().conf())) {
      if (m->id() != options_.node_id) peers_.insert(m->id());
    }
  }
  peers_dirty_ = false;
}

void RaftDriver::ColocateLeadership() {
  GroupReplica* follower_group = Find(options_.colocate_group);
  GroupReplica* anchor = Find(options_.colocate_with);
  if (!follower_group || !anchor) return;
  raft::Raft& r = follower_group->raft();
  uint64_t target = anchor->raft().leader();
  if (r.role() == raft::Role::kLeader && target != 0 && target != options_.node_id &&
      r.IsVoter(target)) {
    r.TransferLeadership(target);
    Touch(follower_group->id());
  }
}

void RaftDriver::HandleReadies() {
  std::vector<GroupReplica*> candidates;
  for (uint64_t id : touched_) {
    if (GroupReplica* g = Find(id)) candidates.push_back(g);
  }
  while (true) {
    std::vector<std::pair<GroupReplica*, raft::Ready>> readies;
    for (GroupReplica* g : candidates) {
      if (!g->raft().HasReady()) continue;
      readies.emplace_back(g, g->raft().GetReady());
      if (uint64_t bad = g->raft().malformed_conf_change(); bad != 0) {
        Fatal(absl::StrCat("group ", g->id(), " committed entry ", bad,
                           " is a membership change that does not decode"));
      }
    }
    if (readies.empty()) {
      RewriteOldLogs();
      return;
    }
    candidates.clear();
    for (auto& [g, rd] : readies) candidates.push_back(g);

    // Appends and heartbeats of a leader may go out before its own fsync (its entries count
    // towards commit only once persisted); everything else waits for durability.
    std::vector<raftpb::Message> early;
    uint64_t sent = static_cast<uint64_t>(absl::ToUnixMicros(clock().Now()));
    for (auto& [g, rd] : readies) {
      if (g->raft().role() != raft::Role::kLeader) continue;
      std::vector<raftpb::Message> late;
      for (auto& m : rd.messages) {
        bool leader_traffic = m.type() == raftpb::MSG_APPEND || m.type() == raftpb::MSG_HEARTBEAT;
        if (leader_traffic) m.set_sent_unix_micros(sent);
        (leader_traffic ? early : late).push_back(std::move(m));
      }
      rd.messages = std::move(late);
    }
    SendMessages(std::move(early));

    storage::WriteBatch batch(*engine_);
    storage::LogBatch log_batch;
    bool durable_state_changed = false;
    bool snapshot_staged = false;
    for (auto& [g, rd] : readies) {
      if (rd.snapshot) {
        if (!g->incoming_snapshot || g->incoming_snapshot->meta.index() != rd.snapshot->index()) {
          Fatal("raft accepted a snapshot whose data is not here");
        }
        g->state_machine().BeginInstall(rd.snapshot->index());
        g->state_machine().StageInstall(*rd.snapshot, *g->incoming_snapshot->files, &batch);
        g->incoming_snapshot->files->Keep();
        snapshot_staged = true;
      }
      g->log_store().StageReady(rd, &batch, &log_batch);
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
    bool wrote = batch.Count() > 0 || !log_batch.empty();
    if (wrote && CrashesAt(DriverOptions::CrashPoint::kBeforeWrite)) return;
    if (batch.Count() > 0) {
      // Snapshot data and meta first, durably: the log drops the entries they replace next.
      if (auto s = engine_->Write(batch, options_.sync && snapshot_staged); !s.ok()) {
        Fatal(absl::StrCat("persisting a snapshot: ", s.ToString()));
      }
      if (!log_batch.empty() && CrashesAt(DriverOptions::CrashPoint::kBetweenWrites)) return;
    }
    if (!log_batch.empty()) {
      bool sync = options_.sync && durable_state_changed;
      absl::Time started = absl::Now();
      if (auto s = engine_->raft_log().Write(log_batch, sync); !s.ok()) {
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

    if (wrote && CrashesAt(DriverOptions::CrashPoint::kAfterWrite)) return;
    std::vector<raftpb::Message> after_sync;
    // Replicas a merge retired in this round: the rest of the round leaves them alone, then
    // they go (their records are already gone from the engine).
    std::set<uint64_t> retired;
    for (auto& [g, rd] : readies) {
      if (retired.contains(g->id())) continue;
      if (rd.snapshot || rd.conf_state) {
        g->conf_dirty = true;
        peers_dirty_ = true;
      }
      if (rd.snapshot) {
        if (auto s = g->state_machine().Load(); !s.ok()) {
          Fatal(absl::StrCat("reloading: ", s.ToString()));
        }
        ++g->snapshots_installed;
        g->incoming_snapshot.reset();
        for (uint64_t absorbed : RetireCoveredBy(*g)) retired.insert(absorbed);
        // Writes this node proposed while it led are answered by ReleaseWritesOfLostLeadership
        // at the end of this iteration: a node installs snapshots only as a follower.
      }
      if (rd.snapshot || rd.conf_state) g->FollowConf();
      for (auto& m : rd.messages) after_sync.push_back(std::move(m));
      g->ApplyCommitted(rd);
      for (uint64_t child : store_.FinishSplits()) AdoptSplitChild(*g, child);
      for (uint64_t absorbed : store_.FinishMerges()) {
        logging::Info(logging::Group{g->id()}, "merged; took over the span of group {}", absorbed);
        g->conf_dirty = true;
        retired.insert(absorbed);
      }
      g->NoteReadStates(rd);
      SendSnapshots(*g, rd.snapshot_requests);
      g->raft().Advance(rd);
      g->raft().SetApplied(g->state_machine().applied_index());
      g->ServeReads();
      g->CompleteAllWrites();
      Compact(*g);
    }
    SendMessages(std::move(after_sync));
    if (!retired.empty()) {
      std::erase_if(candidates, [&](GroupReplica* g) { return retired.contains(g->id()); });
      for (uint64_t id : retired) {
        store_.Retire(id);
        Forget(id);
      }
    }
  }
}

std::vector<uint64_t> RaftDriver::RetireCoveredBy(GroupReplica& g) {
  // A snapshot of a merge's survivor covers the span of the shard it absorbed: a replica of that
  // shard here, frozen into it, is retired as applying the merge would have (its data is the
  // snapshot's now).
  std::vector<uint64_t> covered;
  const ShardScope& scope = g.state_machine().scope();
  for (auto& [id, r] : store_.replicas()) {
    const KvStateMachine& sm = r->state_machine();
    if (id == g.id() || sm.frozen_into() != g.id() || sm.frozen_at() == 0 ||
        !scope.span.Covers(sm.scope().span)) {
      continue;
    }
    covered.push_back(id);
  }
  std::vector<uint64_t> retired;
  for (uint64_t id : covered) {
    if (auto s = store_.RetireNow(id); !s.ok()) {
      Fatal(absl::StrCat("retiring group ", id, " after a snapshot of group ", g.id(),
                         " covered it: ", s.ToString()));
    }
    logging::Info(logging::Group{g.id()}, "a snapshot covered merged group {}; retired", id);
    retired.push_back(id);
  }
  return retired;
}

void RaftDriver::Forget(uint64_t group_id) {
  delegations_.ForgetGroup(group_id);
  board_.Remove(group_id);
  awake_.erase(group_id);
  touched_.erase(group_id);
  peers_dirty_ = true;
}

void RaftDriver::AdoptSplitChild(GroupReplica& parent, uint64_t child_id) {
  GroupReplica* child = Find(child_id);
  if (!child) return;
  logging::Info(logging::Group{parent.id()}, "split; group {} created here", child_id);
  awake_.insert(child_id);
  Touch(child_id);
  parent.conf_dirty = true;
  child->conf_dirty = true;
  peers_dirty_ = true;
  // The parent's leader leads the child at once: no election timeout's worth of unavailability,
  // and with what is left of the parent's lease (at most an election timeout less the margin
  // from now: no other replica of the child can campaign sooner), so lease reads of the moved
  // keys go on without waiting for a heartbeat round.
  if (parent.raft().role() == raft::Role::kLeader) {
    uint64_t bound =
        static_cast<uint64_t>(std::max(0, options_.election_tick - options_.lease_margin_ticks));
    child->raft().InheritLease(std::min(parent.raft().LeaseTicksLeft(), bound));
    child->raft().CampaignNow();
  }
}

void RaftDriver::SendSnapshots(GroupReplica& g, const std::vector<uint64_t>& peers) {
  for (uint64_t peer : peers) {
    if (options_.delegate_snapshots && transport_ && !delegations_.TakeFallback(g.id(), peer)) {
      // The receiver continues from the snapshot with the leader's log, which starts after
      // first_index - 1: a delegate must have applied at least that far.
      uint64_t min_index = g.raft().first_index() - 1;
      uint64_t delegate = ChooseSnapshotSender(options_.node_id, peer, min_index, g.raft().Peers(),
                                               options_.locality_of);
      if (delegate != 0) {
        raftpb::Message ask;
        ask.set_type(raftpb::MSG_SNAPSHOT_DELEGATE);
        ask.set_group_id(g.id());
        ask.set_from(options_.node_id);
        ask.set_to(delegate);
        ask.set_term(g.raft().term());
        ask.set_index(min_index);
        ask.set_snapshot_to(peer);
        delegations_.Started(g.id(), peer, delegate,
                             clock().Now() + options_.delegated_snapshot_timeout);
        snapshots_delegated_.fetch_add(1, std::memory_order_relaxed);
        logging::Info(logging::Group{g.id()}, "node {} streams the snapshot node {} needs",
                      delegate, peer);
        SendMessages({std::move(ask)});
        continue;
      }
    }
    delegations_.Cancel(g.id(), peer);
    raftpb::Message m;
    m.set_type(raftpb::MSG_SNAPSHOT);
    m.set_group_id(g.id());
    m.set_from(options_.node_id);
    m.set_to(peer);
    m.set_term(g.raft().term());
    uint64_t group_id = g.id();
    auto report = [this, group_id, peer](bool ok) {
      Enqueue([this, group_id, peer, ok] {
        if (GroupReplica* r = Find(group_id)) {
          r->raft().ReportSnapshot(peer, ok);
          Touch(group_id);
        }
      });
    };
    auto source = transport_ ? g.state_machine().OpenSnapshot(m.mutable_snapshot())
                             : absl::UnavailableError("no transport");
    if (!source.ok()) {
      g.raft().ReportSnapshot(peer, false);
      continue;
    }
    ++g.snapshots_sent;
    snapshots_sent_.fetch_add(1, std::memory_order_relaxed);
    transport_->SendSnapshot(std::move(m), *std::move(source), report);
  }
}

void RaftDriver::StreamSnapshotFor(GroupReplica& g, const raftpb::Message& request) {
  const uint64_t target = request.snapshot_to();
  raftpb::Message status;
  status.set_type(raftpb::MSG_SNAPSHOT_STATUS);
  status.set_group_id(g.id());
  status.set_from(options_.node_id);
  status.set_to(request.from());
  status.set_term(request.term());
  status.set_snapshot_to(target);
  status.set_reject(true);
  // Only the leader of this replica's own term may send in its name, and never to itself or to
  // this node.
  if (request.term() != g.raft().term() || g.raft().leader() != request.from() ||
      target == options_.node_id || target == request.from() || !transport_) {
    return SendMessages({std::move(status)});
  }
  const std::pair<uint64_t, uint64_t> key{g.id(), target};
  if (streaming_for_.contains(key)) return;  // already on its way; that stream reports
  raftpb::Message snapshot;
  snapshot.set_type(raftpb::MSG_SNAPSHOT);
  snapshot.set_group_id(g.id());
  snapshot.set_from(request.from());
  snapshot.set_to(target);
  snapshot.set_term(request.term());
  auto source = g.state_machine().OpenSnapshot(snapshot.mutable_snapshot());
  // Not far enough for the leader's log to continue from, or from before the receiver was a
  // member (this replica may not know where to send it): the leader sends it instead.
  if (!source.ok() || snapshot.snapshot().index() < request.index() ||
      !raft::IsMemberOf(snapshot.snapshot().conf(), target)) {
    return SendMessages({std::move(status)});
  }
  streaming_for_.insert(key);
  ++g.snapshots_sent;
  snapshots_sent_for_leader_.fetch_add(1, std::memory_order_relaxed);
  auto report = [this, key, status = std::move(status)](bool ok) mutable {
    Enqueue([this, key, ok, status = std::move(status)]() mutable {
      streaming_for_.erase(key);
      status.set_reject(!ok);
      SendMessages({std::move(status)});
    });
  };
  transport_->SendSnapshot(std::move(snapshot), *std::move(source), std::move(report));
}

void RaftDriver::DelegatedSnapshotDone(GroupReplica& g, const raftpb::Message& status) {
  if (!delegations_.Finished(g.id(), status.snapshot_to(), status.from(), !status.reject())) {
    return;
  }
  if (status.reject()) {
    logging::Info(logging::Group{g.id()},
                  "node {} could not stream the snapshot node {} needs; the leader will",
                  status.from(), status.snapshot_to());
  }
  g.raft().ReportSnapshot(status.snapshot_to(), !status.reject());
  Touch(g.id());
}

void RaftDriver::ExpireDelegations() {
  if (delegations_.empty()) return;
  for (auto [group_id, target] : delegations_.TakeExpired(clock().Now())) {
    if (GroupReplica* g = Find(group_id)) {
      logging::Warning(logging::Group{group_id},
                       "no report of a delegated snapshot for node {} in time; the leader will "
                       "stream it",
                       target);
      g->raft().ReportSnapshot(target, false);
      Touch(group_id);
    }
  }
}

void RaftDriver::Compact(GroupReplica& g) {
  auto meta = g.CompactionDue();
  if (!meta) return;
  storage::WriteBatch batch(*engine_);
  g.log_store().StageCompaction(*meta, &batch);
  // Not synced: losing it only leaves a longer log behind (the log engine syncs RocksDB's WAL
  // before it deletes the entries).
  if (auto s = engine_->Write(batch, false); !s.ok()) Fatal(s.ToString());
  g.log_store().Compacted(meta->index());
}

void RaftDriver::RewriteOldLogs() {
  std::vector<uint64_t> groups = engine_->raft_log().TakeRewriteRequests();
  if (groups.empty()) return;
  // RocksDB first: a rewritten log starts at the group's compaction point, which must be durable
  // there before the older entries are gone from the log; a group that is gone needs its
  // tombstone durable before its log is dropped.
  if (auto s = engine_->SyncWal(); !s.ok()) Fatal(s.ToString());
  storage::LogBatch rewrite;
  size_t rewritten = 0, dropped = 0;
  for (uint64_t id : groups) {
    if (GroupReplica* g = Find(id)) {
      RaftLogStore::StageRewrite(g->raft(), &rewrite);
      ++rewritten;
    } else {
      rewrite.DropGroup(id);
      ++dropped;
    }
  }
  if (auto s = engine_->raft_log().Write(rewrite, true); !s.ok()) {
    Fatal(absl::StrCat("rewriting old raft logs: ", s.ToString()));
  }
  logging::Info(
      "raft log: rewrote the logs of {} groups and dropped those of {} gone, so that "
      "the oldest segment can go",
      rewritten, dropped);
}

void RaftDriver::FinishIteration() {
  for (uint64_t id : touched_) {
    GroupReplica* g = Find(id);
    if (!g) continue;
    g->ReleaseWritesOfLostLeadership();
    bool quiet = g->raft().quiesced();
    if (!quiet || g->has_waiting_work()) {
      awake_.insert(id);
    } else {
      awake_.erase(id);
    }
    Publish(*g);
  }
  touched_.clear();
  group_count_.store(store_.replicas().size(), std::memory_order_relaxed);
  quiesced_count_.store(store_.replicas().size() - awake_.size(), std::memory_order_relaxed);
}

void RaftDriver::Publish(GroupReplica& g) {
  const raft::Raft& r = g.raft();
  GroupStatus s;
  s.group_id = g.id();
  s.role = r.role();
  s.term = r.term();
  s.leader_id = r.leader();
  s.commit = r.commit();
  s.applied = g.state_machine().applied_index();
  s.first_index = r.first_index();
  s.last_index = r.last_index();
  s.quiesced = r.quiesced();
  s.missing_on = g.gone_on;
  if (g.state_machine().generation() != g.published_generation) {
    g.published_generation = g.state_machine().generation();
    g.conf_dirty = true;  // a split or a snapshot changed the span
  }
  bool conf_changed = g.conf_dirty;
  if (g.conf_dirty) {
    g.conf_dirty = false;
    for (const raftpb::Member* m : raft::MembersOf(g.published_conf)) {
      if (!r.IsMember(m->id())) g.removed.insert(m->id());
    }
    for (const raftpb::Member* m : raft::MembersOf(r.conf())) g.removed.erase(m->id());
    g.published_conf = r.conf();
    s.conf = r.conf();
    s.removed = g.removed;
    s.vouched = g.Vouched();
    s.span_start = g.state_machine().scope().span.start;
    s.span_end = g.state_machine().scope().span.end;
    s.generation = g.state_machine().generation();
  }
  if (r.role() == raft::Role::kLeader) s.peers = r.Peers();
  s.fsyncs = g.fsyncs;
  s.entries_persisted = g.entries_persisted;
  auto p99 = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() * 99 / 100];
  };
  if (g.fsync_slot > 0 && g.fsync_slot % 16 == 0) g.fsync_p99_ms = p99(g.fsync_ms);
  if (g.apply_slot > 0 && g.apply_slot % 16 == 0) g.apply_p99_ms = p99(g.apply_ms);
  s.fsync_p99_ms = g.fsync_p99_ms;
  s.apply_p99_ms = g.apply_p99_ms;
  absl::Time now = clock().Now();
  // -1: never heard from a leader since start. A quiet follower hears from the leader's node
  // (liveness beats), not from the group.
  if (r.role() == raft::Role::kLeader) {
    s.heartbeat_age_ms = 0;
  } else if (r.quiesced() && r.leader() != 0) {
    absl::Duration since = liveness_.SinceHeard(r.leader(), LivenessNow());
    s.heartbeat_age_ms = since == absl::InfiniteDuration() ? -1 : absl::ToDoubleMilliseconds(since);
  } else {
    s.heartbeat_age_ms = g.last_leader_contact == absl::InfinitePast()
                             ? -1
                             : absl::ToDoubleMilliseconds(now - g.last_leader_contact);
  }
  if (r.leader() != g.last_leader || r.term() != g.logged_term) {
    // One line per leader change or new term: what an operator reads first after a failure.
    logging::Info(logging::Group{g.id()}, "term {}: {}, leader {}", r.term(),
                  raft::RoleName(r.role()), r.leader());
    g.logged_term = r.term();
    if (r.leader() != g.last_leader && r.leader() != 0) ++g.leader_changes;
    g.last_leader = r.leader();
  }
  s.proposals = g.proposals;
  s.leader_changes = g.leader_changes;
  s.snapshots_sent = g.snapshots_sent;
  s.snapshots_installed = g.snapshots_installed;
  s.peer_refused = refused_messages_ + peer_refused_.load(std::memory_order_relaxed);
  board_.Publish(s, conf_changed);
}

}  // namespace kv::server
