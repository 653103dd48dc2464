#include "server/shard_merger.h"

#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/logging.h"
#include "server/raft_replica.h"
#include "server/system_command.h"
#include "sharding/key_codec.h"
#include "sharding/routing_map.h"

namespace kv::server {
namespace {

using MergeState = RaftDriver::MergeState;

constexpr absl::Duration kStepTimeout = absl::Seconds(15);

std::optional<std::vector<MergeState>> StatesOf(RaftDriver* driver) {
  auto states = std::make_shared<std::promise<std::vector<MergeState>>>();
  auto future = states->get_future();
  driver->MergeStates([states](std::vector<MergeState> s) { states->set_value(std::move(s)); });
  if (future.wait_for(std::chrono::seconds(2)) != std::future_status::ready) return std::nullopt;
  return future.get();
}

const MergeState* Find(const std::vector<MergeState>& states, uint64_t group_id) {
  for (const auto& m : states) {
    if (m.group_id == group_id) return &m;
  }
  return nullptr;
}

// The shard hosted here that starts where `left` ends, in the same keyspace.
const MergeState* RightNeighbour(const std::vector<MergeState>& states, const MergeState& left) {
  for (const auto& m : states) {
    if (m.keyspace_id == left.keyspace_id && m.span_start == left.span_end &&
        m.group_id != left.group_id) {
      return &m;
    }
  }
  return nullptr;
}

internal::Command FreezeCommand(const MergeState& absorbed, uint64_t into) {
  internal::Command cmd;
  auto* op = cmd.mutable_freeze();
  op->set_into_group_id(into);
  op->set_generation(absorbed.generation);
  for (uint64_t v : absorbed.voters) op->add_voters(v);
  return cmd;
}

internal::Command MergeCommand(const MergeState& survivor, const MergeState& absorbed,
                               uint64_t freeze_index) {
  internal::Command cmd;
  auto* op = cmd.mutable_merge();
  op->set_absorbed_group_id(absorbed.group_id);
  op->set_absorbed_freeze_index(freeze_index);
  op->set_absorbed_generation(absorbed.generation);
  op->set_absorbed_span_start(absorbed.span_start);
  op->set_absorbed_span_end(absorbed.span_end);
  op->set_generation(survivor.generation);
  for (uint64_t v : survivor.voters) op->add_voters(v);
  return cmd;
}

}  // namespace

ShardMerger::ShardMerger(RaftDriver* driver, const ClusterMetadata* metadata,
                         Replica* metadata_group, MessageSink* transport, MergePolicy policy,
                         ShardLoad* load)
    : driver_(driver),
      metadata_(metadata),
      metadata_group_(metadata_group),
      transport_(transport),
      policy_(policy),
      load_(load) {}

MergeCounters ShardMerger::counters() const {
  return MergeCounters{merged_.load(), aborted_.load(), thawed_.load()};
}

absl::StatusOr<MergeOutcome> ShardMerger::Merge(uint64_t shard_id) {
  std::optional<internal::GroupDescriptor> known;
  for (auto& d : metadata_->Groups()) {
    if (d.group_id() == shard_id) known = std::move(d);
  }
  if (!known || known->span_end().empty()) {
    return absl::NotFoundError(absl::StrCat("no keyspace shard ", shard_id));
  }
  if (!driver_->board().Hosts(shard_id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", shard_id, " has no replica on node ", driver_->node_id(),
                     "; ask one of its replicas", metadata_->AReplicaToAsk(shard_id)));
  }
  auto states = StatesOf(driver_);
  if (!states) return absl::UnavailableError("the node is busy; retry");
  const MergeState* left = Find(*states, shard_id);
  if (!left) return absl::UnavailableError(absl::StrCat("shard ", shard_id, " is moving; retry"));
  if (!left->mergeable) {
    return absl::FailedPreconditionError(
        "only shards of range keyspaces merge (a hash keyspace's shards own slot spans, a geo "
        "keyspace's their regions)");
  }
  const MergeState* right = RightNeighbour(*states, *left);
  if (!right) {
    if (left->span_end == sharding::KeyspaceEnd(left->keyspace_id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard_id, " is the last of its keyspace: no shard after it to merge with"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "the shard after shard ", shard_id,
        " has no replica on this node: both shards must have the same replicas (move one "
        "first)"));
  }
  if (left->voters.empty() || left->voters != right->voters) {
    return absl::FailedPreconditionError(
        absl::StrCat("shards ", left->group_id, " and ", right->group_id,
                     " must have the same voters and no learners to merge (they have ",
                     absl::StrJoin(left->voters, ","), " and ", absl::StrJoin(right->voters, ","),
                     "); move replicas first"));
  }
  if (left->frozen_at != 0 || right->frozen_at != 0) {
    return absl::UnavailableError("a merge of one of these shards is under way; retry");
  }
  // The survivor's log is further along: its next index is above every version of the other.
  bool left_survives = left->applied >= right->applied;
  MergeState survivor = left_survives ? *left : *right;
  MergeState absorbed = left_survives ? *right : *left;
  absl::Time deadline = absl::Now() + kStepTimeout;

  RaftReplica absorbed_group(driver_, transport_, nullptr, absorbed.group_id);
  auto frozen = ProposeWithRetry(&absorbed_group, FreezeCommand(absorbed, survivor.group_id),
                                 deadline, v1::WRITE_ALL);
  if (!frozen.ok()) {
    // The freeze may have applied all the same (WRITE_ALL saw a majority, not every voter):
    // settled at once if this node's replica shows it, rather than by the leader's Tick later.
    auto now_states = StatesOf(driver_);
    const MergeState* seen = now_states ? Find(*now_states, absorbed.group_id) : nullptr;
    if (seen && seen->frozen_at != 0 && seen->frozen_into == survivor.group_id) {
      (void)Settle(absorbed.group_id, survivor.group_id, seen->frozen_at,
                   absl::Now() + kStepTimeout);
    }
    return absl::UnavailableError(
        absl::StrCat("shard ", absorbed.group_id, " was not seen frozen on every replica (",
                     frozen.status().message(), "); a shard left frozen thaws by itself; retry"));
  }
  if (!frozen->result.succeeded()) {
    return absl::AbortedError(absl::StrCat("shard ", absorbed.group_id,
                                           " changed meanwhile (a split, a membership change or "
                                           "another merge); look again and retry"));
  }
  uint64_t freeze_index = frozen->index;

  RaftReplica survivor_group(driver_, transport_, nullptr, survivor.group_id);
  absl::StatusOr<WriteOutcome> merged = PadBeyond(&survivor_group, freeze_index, deadline);
  if (merged.ok()) {
    merged = ProposeWithRetry(&survivor_group, MergeCommand(survivor, absorbed, freeze_index),
                              absl::Now() + kStepTimeout);
  }
  bool done = merged.ok() && merged->result.succeeded();
  uint64_t merge_index = done ? merged->index : 0;
  if (!done) {
    auto settled =
        Settle(absorbed.group_id, survivor.group_id, freeze_index, absl::Now() + kStepTimeout);
    if (!settled.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the merge's outcome is not known yet (", settled.status().message(),
                       "); shard ", absorbed.group_id, " stays frozen until it is settled, within ",
                       absl::FormatDuration(policy_.settle_frozen_after)));
    }
    if (!*settled) {
      return absl::AbortedError(absl::StrCat(
          "the survivor (shard ", survivor.group_id, ") refused the merge: ",
          merged.ok() ? "it changed meanwhile" : std::string(merged.status().message()), "; shard ",
          absorbed.group_id, " thawed; retry"));
    }
  }
  ++merged_;
  logging::Info(logging::Group{survivor.group_id}, "merged shard {} (frozen at index {})",
                absorbed.group_id, freeze_index);
  if (merge_index == 0) return MergeOutcome{survivor.group_id, absorbed.group_id};  // Tick tidies
  if (auto s =
          Publish(survivor.group_id, absorbed.group_id, merge_index, absl::Now() + kStepTimeout);
      !s.ok()) {
    // The survivor's leader publishes its grown span by itself, and Tick removes the absorbed
    // shard's descriptor: the routing map catches up.
    logging::Warning(logging::Group{survivor.group_id}, "merged; routing map not updated yet: {}",
                     s.ToString());
  }
  return MergeOutcome{survivor.group_id, absorbed.group_id};
}

absl::StatusOr<WriteOutcome> ShardMerger::PadBeyond(Replica* survivor, uint64_t index,
                                                    absl::Time deadline) {
  // The merge must apply above the freeze's index (versions are log indexes). The survivor was
  // the further along when chosen, so the gap is the freeze and what came just before it.
  constexpr uint64_t kMaxPadding = 4096;
  // A thaw of no freeze changes nothing (and, unlike an empty command, may be forwarded).
  internal::Command pad;
  pad.mutable_thaw()->set_freeze_index(0);
  WriteOutcome last;
  for (int round = 0; round < 3; ++round) {
    absl::StatusOr<WriteOutcome> noop = ProposeWithRetry(survivor, pad, deadline);
    if (!noop.ok()) return noop.status();
    if (noop->index >= index) return *noop;
    uint64_t gap = index - noop->index;
    if (gap > kMaxPadding) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the survivor's log is ", gap, " entries behind the absorbed shard's freeze"));
    }
    auto left = std::make_shared<std::atomic<uint64_t>>(gap);
    auto all = std::make_shared<std::promise<void>>();
    for (uint64_t i = 0; i < gap; ++i) {
      survivor->ProposeWrite(pad, v1::WRITE_MAJORITY, deadline,
                             [left, all](absl::StatusOr<WriteOutcome>) {
                               if (left->fetch_sub(1) == 1) all->set_value();
                             });
    }
    if (all->get_future().wait_until(absl::ToChronoTime(deadline)) != std::future_status::ready) {
      return absl::DeadlineExceededError("padding the survivor's log took too long");
    }
    last = *noop;
  }
  return absl::UnavailableError(
      absl::StrCat("the survivor's log did not pass index ", index, " (at ", last.index, ")"));
}

absl::StatusOr<bool> ShardMerger::Settle(uint64_t absorbed, uint64_t survivor,
                                         uint64_t freeze_index, absl::Time deadline) {
  bool survivor_known = driver_->board().Hosts(survivor);
  for (const auto& d : metadata_->Groups())
    survivor_known = survivor_known || d.group_id() == survivor;
  if (!survivor_known) {
    // The survivor itself merged away (or its keyspace was dropped) after this freeze: its log
    // can no longer take this merge (it was frozen, and a thaw would have moved its generation
    // past the merge's), so the absorbed shard may thaw.
    return ThawAbsorbed(absorbed, survivor, freeze_index, deadline);
  }
  internal::Command abort;
  abort.mutable_abort_merge()->set_absorbed_group_id(absorbed);
  abort.mutable_abort_merge()->set_absorbed_freeze_index(freeze_index);
  RaftReplica survivor_group(driver_, transport_, nullptr, survivor);
  auto aborted = ProposeWithRetry(&survivor_group, abort, deadline);
  if (!aborted.ok()) return aborted.status();
  if (!aborted->result.succeeded()) {
    if (aborted->result.existed()) return true;  // it merged: nothing to thaw
    return absl::InternalError("the survivor neither merged nor aborted");
  }
  ++aborted_;
  return ThawAbsorbed(absorbed, survivor, freeze_index, deadline);
}

absl::StatusOr<bool> ShardMerger::ThawAbsorbed(uint64_t absorbed, uint64_t survivor,
                                               uint64_t freeze_index, absl::Time deadline) {
  internal::Command thaw;
  thaw.mutable_thaw()->set_freeze_index(freeze_index);
  RaftReplica absorbed_group(driver_, transport_, nullptr, absorbed);
  auto thawed = ProposeWithRetry(&absorbed_group, thaw, deadline);
  if (!thawed.ok()) return thawed.status();
  if (thawed->result.succeeded()) {
    ++thawed_;
    logging::Info(logging::Group{absorbed}, "merge into shard {} aborted; thawed", survivor);
  }
  return false;
}

absl::Status ShardMerger::Publish(uint64_t survivor, uint64_t absorbed, uint64_t merge_index,
                                  absl::Time deadline) {
  if (merge_index != 0) {
    auto applied = std::make_shared<std::promise<absl::Status>>();
    auto future = applied->get_future();
    driver_->WaitForApplied(survivor, merge_index, deadline,
                            [applied](absl::Status s) { applied->set_value(s); });
    if (future.wait_until(absl::ToChronoTime(deadline + absl::Seconds(1))) !=
        std::future_status::ready) {
      return absl::DeadlineExceededError("the merge did not apply here in time");
    }
    if (auto s = future.get(); !s.ok()) return s;
  }
  // The absorbed shard's descriptor goes only once the map has the grown survivor, so that no
  // key is left without a shard in it.
  std::optional<sharding::KeyRange> absorbed_span;
  std::optional<internal::GroupDescriptor> published;
  for (auto& d : metadata_->Groups()) {
    if (d.group_id() == absorbed) absorbed_span = sharding::KeyRange{d.span_start(), d.span_end()};
    if (d.group_id() == survivor) published = std::move(d);
  }
  if (!absorbed_span) return absl::OkStatus();  // gone already
  auto local = std::make_shared<std::promise<std::optional<internal::GroupDescriptor>>>();
  auto future = local->get_future();
  driver_->ShardDescriptors(false, [local, survivor](std::vector<internal::GroupDescriptor> all) {
    std::optional<internal::GroupDescriptor> mine;
    for (auto& d : all) {
      if (d.group_id() == survivor) mine = std::move(d);
    }
    local->set_value(std::move(mine));
  });
  if (future.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
    return absl::UnavailableError("the node is busy");
  }
  auto grown = future.get();
  if (!grown ||
      !sharding::KeyRange{grown->span_start(), grown->span_end()}.Covers(*absorbed_span)) {
    return absl::UnavailableError("the merge has not applied on this node yet");
  }
  // Published as the survivor's leader would (Node::PublishLedShards): only forwards.
  if (!published ||
      sharding::IsNewer({grown->epoch().generation(), grown->epoch().conf_version()},
                        {published->epoch().generation(), published->epoch().conf_version()})) {
    internal::Command put;
    put.mutable_system_put()->set_key(GroupKey(survivor));
    put.mutable_system_put()->set_value(grown->SerializeAsString());
    if (auto s = ProposeSystemCommand(metadata_group_, put, deadline); !s.ok()) return s.status();
  }
  internal::Command gone;
  gone.mutable_system_put()->set_key(GroupKey(absorbed));
  gone.mutable_system_put()->set_value("");
  return ProposeSystemCommand(metadata_group_, gone, deadline).status();
}

void ShardMerger::Tick(absl::Time now) {
  auto states = StatesOf(driver_);
  if (!states) return;
  // Freezes left behind (a merger that stopped, an outcome never learned): settled by the
  // absorbed shard's leader once they have lasted.
  std::map<std::pair<uint64_t, uint64_t>, absl::Time> still_frozen;
  for (const auto& m : *states) {
    if (m.frozen_at == 0 || !m.leads) continue;
    auto key = std::make_pair(m.group_id, m.frozen_at);
    auto seen = frozen_seen_.find(key);
    absl::Time first = seen == frozen_seen_.end() ? now : seen->second;
    if (now - first < policy_.settle_frozen_after) {
      still_frozen[key] = first;
      continue;
    }
    if (auto s = Settle(m.group_id, m.frozen_into, m.frozen_at, now + kStepTimeout); !s.ok()) {
      logging::Warning(logging::Group{m.group_id}, "frozen for a merge since {}; not settled: {}",
                       absl::FormatTime(first), s.status().ToString());
      still_frozen[key] = first;
    }
  }
  frozen_seen_ = std::move(still_frozen);
  // A merger that stopped after the merge applied: the absorbed shard's descriptor goes.
  std::set<uint64_t> known;
  for (const auto& d : metadata_->Groups()) known.insert(d.group_id());
  for (const auto& m : *states) {
    if (!m.leads) continue;
    for (uint64_t absorbed : m.merged) {
      if (!known.contains(absorbed)) continue;
      if (auto s = Publish(m.group_id, absorbed, 0, now + kStepTimeout); !s.ok()) {
        logging::Warning(logging::Group{m.group_id}, "merged shard {} still in the routing map: {}",
                         absorbed, s.ToString());
      }
    }
  }
  MergeColdShards(now, *states);
}

void ShardMerger::MergeColdShards(absl::Time now, const std::vector<MergeState>& states) {
  if (policy_.size_bytes == 0 || !load_) return;
  std::map<uint64_t, Quiet> quiet;
  for (const auto& m : states) {
    uint64_t requests = load_->Total(m.group_id);
    auto it = quiet_.find(m.group_id);
    Quiet q{m.generation, requests, now, now};
    if (it != quiet_.end() && it->second.generation == m.generation) {
      double seconds = std::max(1e-3, absl::ToDoubleSeconds(now - it->second.seen));
      double qps = static_cast<double>(requests - it->second.requests) / seconds;
      if (qps <= policy_.cold_qps) q.since = it->second.since;
    }
    quiet[m.group_id] = q;
  }
  quiet_ = std::move(quiet);
  if (now - last_merge_ < policy_.min_interval) return;
  auto quiet_long = [&](const MergeState& m) {
    return now - quiet_[m.group_id].since >= policy_.quiet_for;
  };
  for (const auto& left : states) {
    if (!left.leads || !left.mergeable || left.frozen_at != 0 || !quiet_long(left)) continue;
    const MergeState* right = RightNeighbour(states, left);
    if (!right || right->frozen_at != 0 || right->voters != left.voters || left.voters.empty() ||
        !quiet_long(*right)) {
      continue;
    }
    uint64_t left_bytes = driver_->engine()->ApproximateSpanBytes(left.span_start, left.span_end);
    uint64_t right_bytes =
        driver_->engine()->ApproximateSpanBytes(right->span_start, right->span_end);
    if (left_bytes >= policy_.size_bytes || right_bytes >= policy_.size_bytes ||
        (policy_.split_size_bytes > 0 &&
         left_bytes + right_bytes >= policy_.split_size_bytes / 2)) {
      continue;
    }
    last_merge_ = now;
    auto merged = Merge(left.group_id);
    if (merged.ok()) {
      logging::Info(logging::Group{merged->survivor},
                    "small and cold: merged with shard {} ({} + {} bytes)", merged->absorbed,
                    left_bytes, right_bytes);
    } else {
      logging::Warning(logging::Group{left.group_id}, "small and cold but not merged: {}",
                       merged.status().ToString());
    }
    return;  // one at a time
  }
}

}  // namespace kv::server
