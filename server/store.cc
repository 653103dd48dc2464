#include "server/store.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/logging.h"
#include "storage/keys.h"

namespace kv::server {
namespace {

using storage::Column;

raftpb::ConfState ConfOf(const internal::GroupDescriptor& d, const Store::AddressBook& addresses) {
  raftpb::ConfState conf;
  for (uint64_t id : d.voters()) {
    auto* m = conf.add_voters();
    m->set_id(id);
    m->set_address(addresses(id));
  }
  for (uint64_t id : d.learners()) {
    auto* m = conf.add_learners();
    m->set_id(id);
    m->set_address(addresses(id));
  }
  return conf;
}

}  // namespace

Store::Store(storage::Engine* engine, const DriverOptions* options, StateMachineFactory factory,
             AddressBook addresses)
    : engine_(engine),
      options_(options),
      factory_(std::move(factory)),
      addresses_(std::move(addresses)) {}

absl::Status Store::Open() {
  auto it = engine_->NewIterator(Column::kMeta, storage::kReplicaPrefix,
                                 storage::PrefixSuccessor(storage::kReplicaPrefix));
  std::vector<internal::GroupDescriptor> live;
  for (; it->Valid(); it->Next()) {
    internal::ReplicaRecord record;
    if (it->key().size() != 9 ||
        !record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())) ||
        record.group().group_id() != storage::GroupOfReplicaKey(it->key())) {
      return absl::DataLossError("a replica record in the meta column family is corrupted");
    }
    if (record.tombstone()) {
      tombstones_[record.group().group_id()] = record;
    } else {
      live.push_back(record.group());
    }
  }
  if (!it->status().ok()) return it->status();
  for (const auto& d : live) {
    if (auto r = Load(d); !r.ok()) return r.status();
  }
  return DropLeftoverLogs();
}

absl::Status Store::DropLeftoverLogs() {
  std::vector<uint64_t> leftovers = engine_->raft_log().UntakenGroups();
  if (leftovers.empty()) return absl::OkStatus();
  // Their replicas are gone (tombstoned, or a crash undid their creation); that must be durable
  // before their logs are.
  if (auto s = engine_->SyncWal(); !s.ok()) return s;
  storage::LogBatch dropped;
  for (uint64_t id : leftovers) dropped.DropGroup(id);
  logging::Info("dropped the Raft logs of {} groups this node no longer hosts", leftovers.size());
  return engine_->raft_log().Write(dropped, true);
}

void Store::StageRecord(const internal::GroupDescriptor& descriptor,
                        storage::WriteBatch* batch) const {
  internal::ReplicaRecord record;
  *record.mutable_group() = descriptor;
  batch->Put(Column::kMeta, storage::ReplicaKey(descriptor.group_id()), record.SerializeAsString());
}

absl::StatusOr<GroupReplica*> Store::OpenOrBootstrap(uint64_t group_id, uint64_t shard_id) {
  if (GroupReplica* r = Find(group_id)) return r;
  if (WasDestroyed(group_id)) {
    return absl::FailedPreconditionError(absl::StrCat("group ", group_id, " was destroyed here"));
  }
  internal::GroupDescriptor d;
  d.set_format(1);
  d.set_group_id(group_id);
  d.set_shard_id(shard_id);
  d.mutable_epoch()->set_generation(1);
  d.mutable_epoch()->set_conf_version(1);
  RaftLogStore log(engine_, group_id);
  auto state = log.LoadInitial();
  if (!state.ok()) return state.status();
  storage::WriteBatch batch(*engine_);
  if (state->empty() && !options_->join && !options_->initial_voters.empty()) {
    raftpb::ConfState voters;
    for (const auto& [id, address] : options_->initial_voters) {
      auto* m = voters.add_voters();
      m->set_id(id);
      m->set_address(address);
      d.add_voters(id);
    }
    log.StageBootstrap(raft::Bootstrap(voters), &batch);
  }
  StageRecord(d, &batch);
  if (auto s = engine_->Write(batch, true); !s.ok()) return s;
  return Load(d);
}

bool Store::MayRecreate(const internal::GroupDescriptor& descriptor) const {
  auto it = tombstones_.find(descriptor.group_id());
  return it == tombstones_.end() ||
         descriptor.epoch().conf_version() > it->second.group().epoch().conf_version();
}

absl::StatusOr<GroupReplica*> Store::Create(const internal::GroupDescriptor& descriptor,
                                            const ReplicaOrigin& origin) {
  storage::WriteBatch batch(*engine_);
  if (auto s = StageCreate(descriptor, origin, &batch); !s.ok()) return s;
  if (auto s = engine_->Write(batch, true); !s.ok()) return s;
  tombstones_.erase(descriptor.group_id());
  return Load(descriptor);
}

absl::Status Store::StageCreate(const internal::GroupDescriptor& descriptor,
                                const ReplicaOrigin& origin, storage::WriteBatch* out) {
  uint64_t id = descriptor.group_id();
  if (Find(id)) return absl::AlreadyExistsError(absl::StrCat("group ", id, " exists here"));
  auto tombstone = tombstones_.find(id);
  if (tombstone != tombstones_.end() &&
      (origin.kind != ReplicaOrigin::Kind::kEmpty || !MayRecreate(descriptor))) {
    return absl::FailedPreconditionError(
        absl::StrCat("group ", id, " was destroyed here; only a newer membership brings it back"));
  }
  RaftLogStore log(engine_, id);
  auto existing = log.LoadInitial();
  if (!existing.ok()) return existing.status();
  if (!existing->empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("group ", id, " has Raft state here without a replica record"));
  }
  storage::WriteBatch& batch = *out;
  raftpb::ConfState conf = origin.conf ? *origin.conf : ConfOf(descriptor, addresses_);
  switch (origin.kind) {
    case ReplicaOrigin::Kind::kBootstrap:
      if (conf.voters_size() == 0) {
        return absl::InvalidArgumentError("a bootstrapped group needs at least one voter");
      }
      log.StageBootstrap(raft::Bootstrap(conf), &batch);
      break;
    case ReplicaOrigin::Kind::kEmpty:
      if (tombstone != tombstones_.end()) {
        // Back after a move away: in the last term it knew, as if it had voted (for itself).
        raftpb::HardState hs;
        hs.set_term(tombstone->second.last_term());
        hs.set_vote(options_->node_id);
        batch.Put(Column::kRaft, storage::RaftHardStateKey(id), hs.SerializeAsString());
      }
      break;
    case ReplicaOrigin::Kind::kSplit: {
      if (origin.index == 0 || origin.term == 0) {
        return absl::InvalidArgumentError("a split needs the parent's index and term");
      }
      // As if everything up to the split index had been compacted into a snapshot whose data
      // is already in place: the child's first entry is index + 1, so versions (log indexes)
      // keep growing for every key across the split.
      raft::BootstrapState s;
      s.snapshot.set_index(origin.index);
      s.snapshot.set_term(origin.term);
      *s.snapshot.mutable_conf() = conf;
      s.hard_state.set_term(origin.term);
      s.hard_state.set_commit(origin.index);
      log.StageBootstrap(s, &batch);
      auto child = factory_(descriptor);
      child->set_generation(std::max<uint64_t>(descriptor.epoch().generation(), 1));
      child->StageStartAt(origin.index, origin.term, origin.clock_ms, conf, &batch);
      break;
    }
  }
  StageRecord(descriptor, &batch);
  return absl::OkStatus();
}

absl::Status Store::StageSplit(uint64_t parent_id, const internal::SplitOp& op, uint64_t index,
                               uint64_t term, uint64_t clock_ms, storage::WriteBatch* batch) {
  GroupReplica* parent = Find(parent_id);
  if (!parent) return absl::InternalError("split of a group not hosted here");
  const ShardScope& scope = parent->state_machine().scope();
  internal::GroupDescriptor shrunk = parent->descriptor();
  shrunk.set_shard_id(0);
  shrunk.set_keyspace_id(scope.keyspace.id);
  shrunk.set_strategy(static_cast<uint32_t>(scope.keyspace.strategy));
  shrunk.clear_regions();
  for (const auto& r : scope.keyspace.regions) shrunk.add_regions(r);
  shrunk.set_span_start(scope.span.start);
  shrunk.set_span_end(op.split_key());
  shrunk.mutable_epoch()->set_generation(parent->state_machine().generation() + 1);
  internal::GroupDescriptor child = shrunk;
  // The child's members are the parent's at the split index, not as of the end of the batch
  // that applies it (a membership change after the split in the same batch is the parent's
  // alone).
  // Its conf version is that of those members too, not the parent's latest: a node applying
  // the split late (its parent conf already past the split index) must publish the same child
  // descriptor as every other node. A newer-looking version without the learner the child
  // really has would make that learner's node destroy and tombstone its replica.
  raftpb::ConfState members = parent->raft().ConfAt(index);
  child.mutable_epoch()->clear_conf_version();
  SetMembers(members, &child);
  child.set_group_id(op.child_group_id());
  child.set_span_start(op.split_key());
  child.set_span_end(scope.span.end);
  child.set_split_from(parent_id);
  child.set_split_index(index);
  ReplicaOrigin origin;
  origin.kind = ReplicaOrigin::Kind::kSplit;
  origin.index = index;
  origin.term = term;
  origin.clock_ms = clock_ms;
  origin.conf = members;
  if (auto s = StageCreate(child, origin, batch); !s.ok()) return s;
  StageRecord(shrunk, batch);
  pending_splits_.push_back({shrunk, child});
  return absl::OkStatus();
}

std::vector<uint64_t> Store::FinishSplits() {
  std::vector<uint64_t> children;
  for (auto& [shrunk, child] : pending_splits_) {
    if (GroupReplica* parent = Find(shrunk.group_id())) parent->set_descriptor(shrunk);
    auto r = Load(child);
    if (!r.ok()) {
      logging::Error(logging::Group{shrunk.group_id()}, "the split child {} does not load: {}",
                     child.group_id(), r.status().ToString());
      std::abort();  // its creation is durable: a node that cannot open it must not go on
    }
    children.push_back(child.group_id());
  }
  pending_splits_.clear();
  return children;
}

internal::ReplicaRecord Store::StageTombstone(GroupReplica& r, storage::WriteBatch* batch) const {
  internal::ReplicaRecord tombstone;
  *tombstone.mutable_group() = r.descriptor();
  tombstone.set_tombstone(true);
  tombstone.set_last_term(r.raft().term());
  batch->Put(Column::kMeta, storage::ReplicaKey(r.id()), tombstone.SerializeAsString());
  return tombstone;
}

absl::Status Store::StageMerge(uint64_t survivor_id, const internal::MergeOp& op, uint64_t index,
                               storage::WriteBatch* batch) {
  GroupReplica* survivor = Find(survivor_id);
  GroupReplica* absorbed = Find(op.absorbed_group_id());
  if (!survivor) return absl::InternalError("merge into a group not hosted here");
  // Every voter of the survivor is a voter of the absorbed shard (the op checked the
  // memberships), and every one of those applied the freeze durably before the merge was
  // proposed: a replica missing or frozen otherwise here breaks that, and absorbing it would
  // diverge from the other replicas.
  const KvStateMachine* a = absorbed ? &absorbed->state_machine() : nullptr;
  // (Its data is final from its freeze on, the same on every node: that is what counts.)
  if (!a || a->frozen_at() != op.absorbed_freeze_index() || a->frozen_into() != survivor_id ||
      a->scope().span.start != op.absorbed_span_start() ||
      a->scope().span.end != op.absorbed_span_end() ||
      a->applied_index() < op.absorbed_freeze_index()) {
    return absl::InternalError(
        absl::StrCat("group ", survivor_id, " merges group ", op.absorbed_group_id(), " at index ",
                     index, " but this node's replica of it is ",
                     a ? absl::StrCat("frozen at ", a->frozen_at(), " into ", a->frozen_into(),
                                      ", generation ", a->generation())
                       : "missing"));
  }
  absorbed->log_store().StageDestroy(batch);
  a->StageRetire(batch);
  internal::ReplicaRecord tombstone = StageTombstone(*absorbed, batch);
  internal::GroupDescriptor grown = survivor->descriptor();
  const ShardScope& scope = survivor->state_machine().scope();
  grown.set_span_start(scope.span.start);
  grown.set_span_end(scope.span.end);
  grown.mutable_epoch()->set_generation(survivor->state_machine().generation());
  StageRecord(grown, batch);
  pending_merges_.emplace_back(std::move(grown), std::move(tombstone));
  return absl::OkStatus();
}

std::vector<uint64_t> Store::FinishMerges() {
  std::vector<uint64_t> absorbed;
  for (auto& [grown, tombstone] : pending_merges_) {
    if (GroupReplica* survivor = Find(grown.group_id())) survivor->set_descriptor(grown);
    tombstones_[tombstone.group().group_id()] = tombstone;
    absorbed.push_back(tombstone.group().group_id());
  }
  pending_merges_.clear();
  return absorbed;
}

void Store::Retire(uint64_t group_id) {
  GroupReplica* r = Find(group_id);
  if (!r) return;
  r->FailAll(absl::UnavailableError(
      absl::StrCat("group ", group_id, " merged into its neighbour; retry at the key's shard")));
  replicas_.erase(group_id);
}

absl::Status Store::RetireNow(uint64_t group_id) {
  GroupReplica* r = Find(group_id);
  if (!r) return absl::NotFoundError(absl::StrCat("no replica of group ", group_id, " here"));
  return WriteTombstone(*r, /*keep_data=*/true);
}

absl::Status Store::WriteTombstone(GroupReplica& r, bool keep_data) {
  storage::WriteBatch batch(*engine_);
  r.log_store().StageDestroy(&batch);
  if (keep_data) {
    r.state_machine().StageRetire(&batch);
  } else {
    r.state_machine().StageDestroy(&batch);
  }
  internal::ReplicaRecord tombstone = StageTombstone(r, &batch);
  if (auto s = engine_->Write(batch, true); !s.ok()) return s;
  tombstones_[r.id()] = std::move(tombstone);
  return absl::OkStatus();
}

absl::StatusOr<GroupReplica*> Store::Load(const internal::GroupDescriptor& descriptor) {
  uint64_t id = descriptor.group_id();
  auto sm = factory_(descriptor);
  sm->set_generation(std::max<uint64_t>(descriptor.epoch().generation(), 1));
  sm->SetSplitStager([this, id](const internal::SplitOp& op, uint64_t index, uint64_t term,
                                uint64_t clock_ms, storage::WriteBatch* batch) {
    return StageSplit(id, op, index, term, clock_ms, batch);
  });
  sm->SetMembersAt([this, id](uint64_t index) {
    GroupReplica* g = Find(id);
    return g ? g->raft().ConfAt(index) : raftpb::ConfState();
  });
  sm->SetMergeStager(
      [this, id](const internal::MergeOp& op, uint64_t index, storage::WriteBatch* batch) {
        return StageMerge(id, op, index, batch);
      });
  if (auto s = sm->Load(); !s.ok()) return s;
  auto log = std::make_unique<RaftLogStore>(engine_, id);
  auto state = log->Load();
  if (!state.ok()) return state.status();
  if (options_->force_new_cluster && !state->empty()) {
    if (auto s = ForceNewCluster(id, &*state); !s.ok()) return s;
  }
  raft::Config cfg;
  cfg.id = options_->node_id;
  cfg.group_id = id;
  cfg.election_tick = options_->election_tick;
  cfg.heartbeat_tick = options_->heartbeat_tick;
  cfg.lease_margin_ticks = options_->lease_margin_ticks;
  cfg.max_uncommitted_bytes = options_->max_uncommitted_bytes;
  cfg.seed = options_->seed != 0
                 ? options_->seed * 1000003 + id
                 : std::random_device{}() ^ static_cast<uint64_t>(absl::GetCurrentTimeNanos());
  auto raft = std::make_unique<raft::Raft>(cfg);
  uint64_t applied = sm->applied_index();
  if (applied > state->snapshot.index() + state->entries.size() && applied > 0 &&
      !state->entries.empty()) {
    return absl::DataLossError(absl::StrCat("group ", id, " applied index ", applied,
                                            " is beyond its log; the raft state is damaged"));
  }
  raft->Restore(state->hard_state, state->snapshot, std::move(state->entries), applied);
  raft->SetApplied(applied);
  // An empty replica of a split child under the child's first membership never held the
  // group here (a replica destroyed here comes back only under a newer membership, a change in
  // the child's own log, past the split index): it acknowledged nothing, so it may vote for a
  // candidate that holds the split. One back after its node left the group must not vote while
  // empty: the entries it acknowledged before are gone, and its vote could elect a node missing
  // them under an older membership (node simulation seed 97 of 100).
  if (descriptor.split_from() != 0 && raft->conf().voters_size() == 0 &&
      descriptor.epoch().conf_version() <= descriptor.split_index()) {
    raft->SetEmptyVoteFloor(descriptor.split_index());
  }
  if (uint64_t bad = raft->malformed_conf_change(); bad != 0) {
    return absl::DataLossError(absl::StrCat("group ", id, " log entry ", bad,
                                            " is a membership change that does not decode"));
  }
  auto replica = std::make_unique<GroupReplica>(descriptor, std::move(raft), std::move(log),
                                                std::move(sm), options_);
  replica->FollowConf();
  GroupReplica* out = replica.get();
  replicas_[id] = std::move(replica);
  return out;
}

absl::Status Store::Destroy(uint64_t group_id) {
  GroupReplica* r = Find(group_id);
  if (!r) return absl::NotFoundError(absl::StrCat("no replica of group ", group_id, " here"));
  if (auto s = WriteTombstone(*r, /*keep_data=*/false); !s.ok()) return s;
  r->FailAll(absl::UnavailableError(
      absl::StrCat("group ", group_id, " was removed from this node; retry elsewhere")));
  replicas_.erase(group_id);
  return absl::OkStatus();
}

GroupReplica* Store::Find(uint64_t group_id) {
  auto it = replicas_.find(group_id);
  return it == replicas_.end() ? nullptr : it->second.get();
}

absl::Status Store::ForceNewCluster(uint64_t group_id, PersistedRaftState* state) {
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
  self->set_id(options_->node_id);
  self->set_address(options_->peer_address);
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
  storage::WriteBatch unused(*engine_);
  storage::LogBatch log;
  store.StageReady(rd, &unused, &log);
  if (auto s = engine_->raft_log().Write(log, true); !s.ok()) return s;
  logging::Warning(logging::Group{group_id},
                   "--force-new-cluster: node {} is now the only voter (log entry {}); start "
                   "other nodes empty with --join and add them",
                   options_->node_id, e.index());
  state->entries.push_back(std::move(e));
  state->hard_state = hs;
  return absl::OkStatus();
}

}  // namespace kv::server
