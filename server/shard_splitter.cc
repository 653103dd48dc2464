#include "server/shard_splitter.h"

#include <cstdio>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/key_router.h"
#include "server/logging.h"
#include "server/raft_replica.h"
#include "server/system_command.h"
#include "sharding/key_codec.h"

namespace kv::server {
namespace {

// One request in this many has its key sampled; enough to balance a split.
constexpr uint64_t kSampleEvery = 8;
constexpr size_t kMaxSamplesPerShard = 4096;

uint32_t SlotAt(const sharding::Keyspace& ks, const std::string& boundary) {
  if (boundary == sharding::KeyspaceBegin(ks.id)) return 0;
  if (boundary == sharding::KeyspaceEnd(ks.id)) return sharding::kSlots;
  return (static_cast<unsigned char>(boundary[8]) << 8) | static_cast<unsigned char>(boundary[9]);
}

}  // namespace

void ShardLoad::Record(uint64_t group_id, std::string_view encoded_key) {
  absl::MutexLock lock(&mu_);
  ++totals_[group_id];
  PerShard& s = shards_[group_id];
  if (++s.requests % kSampleEvery == 0 && s.samples.size() < kMaxSamplesPerShard) {
    s.samples.push_back({std::string(encoded_key), 1});
  }
}

uint64_t ShardLoad::Total(uint64_t group_id) {
  absl::MutexLock lock(&mu_);
  auto it = totals_.find(group_id);
  return it == totals_.end() ? 0 : it->second;
}

ShardLoad::Taken ShardLoad::Take(uint64_t group_id) {
  absl::MutexLock lock(&mu_);
  Taken out;
  auto it = shards_.find(group_id);
  if (it == shards_.end()) return out;
  out.requests = it->second.requests;
  out.samples = std::move(it->second.samples);
  shards_.erase(it);
  return out;
}

ShardSplitter::ShardSplitter(RaftDriver* driver, const ClusterMetadata* metadata,
                             Replica* metadata_group, MessageSink* transport, SplitPolicy policy,
                             ShardLoad* load)
    : driver_(driver),
      metadata_(metadata),
      metadata_group_(metadata_group),
      transport_(transport),
      policy_(policy),
      load_(load) {}

SplitCounters ShardSplitter::counters() const {
  return SplitCounters{by_command_.load(), by_size_.load(), by_load_.load(), hot_keys_.load()};
}

std::optional<sharding::Keyspace> ShardSplitter::KeyspaceOfShard(
    const internal::GroupDescriptor& d) const {
  for (auto& k : metadata_->Keyspaces()) {
    if (k.id() == d.keyspace_id()) return KeyspaceOf(k);
  }
  return std::nullopt;
}

std::optional<ShardSplitter::ShardSample> ShardSplitter::SampleShard(
    uint64_t group_id, const sharding::Keyspace& ks) const {
  auto sampled = std::make_shared<std::promise<std::optional<ShardSample>>>();
  ReadRequirement eventual;
  eventual.consistency = v1::READ_EVENTUAL;
  eventual.deadline = absl::Now() + absl::Seconds(5);
  RaftDriver* driver = driver_;
  driver_->Read(group_id, eventual, [sampled, driver, group_id, ks](absl::Status ready) {
    // On the driver thread, where the replica cannot go away under the read.
    KvStateMachine* sm = ready.ok() ? driver->StateMachineOf(group_id) : nullptr;
    if (!sm) {
      sampled->set_value(std::nullopt);
      return;
    }
    ShardSample sample;
    sample.span = sm->scope().span;
    sample.generation = sm->generation();
    std::vector<ScanItem> items;
    bool more = false;
    if (ks.strategy != sharding::Strategy::kHash &&
        sm->Scan("", "", 20000, 16 << 20, false, &items, &more).ok()) {
      for (const auto& item : items) {
        sample.keys.push_back(
            {sharding::EncodeKey(ks, item.key), item.key.size() + item.value.size() + 16});
      }
    }
    sampled->set_value(std::move(sample));
  });
  auto f = sampled->get_future();
  if (f.wait_for(std::chrono::seconds(6)) != std::future_status::ready) return std::nullopt;
  return f.get();
}

absl::StatusOr<uint64_t> ShardSplitter::Split(uint64_t shard_id, std::optional<std::string> at,
                                              SplitReason reason,
                                              const std::vector<sharding::KeySample>* load) {
  std::optional<internal::GroupDescriptor> shard;
  for (auto& d : metadata_->Groups()) {
    if (d.group_id() == shard_id) shard = std::move(d);
  }
  if (!shard || shard->span_end().empty()) {
    return absl::NotFoundError(
        absl::StrCat("no keyspace shard ", shard_id, " (the default keyspace does not split yet)"));
  }
  auto ks = KeyspaceOfShard(*shard);
  if (!ks) return absl::NotFoundError("the shard's keyspace is gone");
  auto sample = SampleShard(shard->group_id(), *ks);
  if (!sample) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", driver_->node_id(), " holds no replica of shard ", shard_id,
        "; ask a node that does (its replicas: ", absl::StrJoin(shard->voters(), ", "), ")"));
  }
  std::string split_key;
  if (at) {
    split_key = ks->strategy == sharding::Strategy::kHash
                    ? sharding::SlotBoundary(ks->id, sharding::SlotOf(*at))
                    : sharding::EncodeKey(*ks, *at);
  } else if (ks->strategy == sharding::Strategy::kHash && !load) {
    // By size: halve the slot span (keys are spread over it by the hash).
    uint32_t lo = SlotAt(*ks, sample->span.start), hi = SlotAt(*ks, sample->span.end);
    if (hi - lo < 2) return absl::FailedPreconditionError("the shard owns a single slot");
    split_key = sharding::SlotBoundary(ks->id, lo + (hi - lo) / 2);
  } else {
    auto choice = sharding::ChooseSplitKey(*ks, sample->span, load ? *load : sample->keys);
    if (choice.hot_key) {
      ++hot_keys_;
      auto user = sharding::DecodeKey(*ks, *choice.hot_key);
      return absl::FailedPreconditionError(absl::StrCat(
          "one key (", user.ok() ? std::string(*user) : "?", ") carries most of shard ", shard_id,
          "'s ", load ? "requests" : "data", ": a single key cannot be split"));
    }
    if (!choice.split_key) {
      return absl::FailedPreconditionError(
          "the shard has too few keys to choose where to split; give --at KEY");
    }
    split_key = *choice.split_key;
  }
  if (!(split_key > sample->span.start && split_key < sample->span.end)) {
    return absl::InvalidArgumentError("the split key is not strictly inside the shard's span");
  }
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  internal::Command reserve;
  reserve.mutable_reserve_group_ids()->set_count(1);
  auto reserved = ProposeSystemCommand(metadata_group_, reserve, deadline);
  if (!reserved.ok()) return reserved.status();
  uint64_t child = reserved->result.current_version();
  internal::Command split;
  split.mutable_split()->set_child_group_id(child);
  split.mutable_split()->set_split_key(split_key);
  split.mutable_split()->set_generation(sample->generation);
  RaftReplica parent(driver_, transport_, nullptr, shard->group_id());
  auto applied = ProposeWithRetry(&parent, split, deadline);
  if (!applied.ok()) return applied.status();
  if (!applied->result.succeeded()) {
    return absl::AbortedError("the shard split or changed meanwhile; look again and retry");
  }
  (reason == SplitReason::kCommand ? by_command_
   : reason == SplitReason::kSize  ? by_size_
                                   : by_load_)++;
  logging::Info(logging::Group{shard_id}, "split by {} at index {}; shard {} takes the upper half",
                reason == SplitReason::kCommand ? "command"
                : reason == SplitReason::kSize  ? "size"
                                                : "load",
                applied->index, child);
  // The routing map learns of both halves now (their leaders also publish them, should this
  // node stop here).
  internal::GroupDescriptor left = *shard;
  left.set_span_start(sample->span.start);
  left.set_span_end(split_key);
  left.mutable_epoch()->set_generation(sample->generation + 1);
  internal::GroupDescriptor right = left;
  right.set_group_id(child);
  right.set_span_start(split_key);
  right.set_span_end(sample->span.end);
  right.set_split_from(shard->group_id());
  right.set_split_index(applied->index);
  for (const auto* d : {&left, &right}) {
    internal::Command put;
    put.mutable_system_put()->set_key(GroupKey(d->group_id()));
    put.mutable_system_put()->set_value(d->SerializeAsString());
    if (auto s = ProposeSystemCommand(metadata_group_, put, deadline); !s.ok()) return s.status();
  }
  return child;
}

void ShardSplitter::Tick(absl::Time now) {
  if (policy_.size_bytes == 0 && policy_.load_qps <= 0) return;
  auto led = std::make_shared<std::promise<std::vector<internal::GroupDescriptor>>>();
  auto future = led->get_future();
  // Load is seen where requests arrive (any replica: a stale generation stops a second split of
  // the same shard); size only where the shard is led, so its replicas do not all split it.
  driver_->ShardDescriptors(/*led_only=*/false, [led](std::vector<internal::GroupDescriptor> d) {
    led->set_value(std::move(d));
  });
  if (future.wait_for(std::chrono::seconds(1)) != std::future_status::ready) return;
  bool may_split = now - last_split_ >= policy_.min_interval;
  for (const auto& d : future.get()) {
    ShardLoad::Taken load = load_ ? load_->Take(d.group_id()) : ShardLoad::Taken{};
    if (!may_split) continue;
    // By load: over the rate on every tick for load_for.
    bool hot = policy_.load_qps > 0 && static_cast<double>(load.requests) > policy_.load_qps;
    if (!hot) {
      hot_since_.erase(d.group_id());
    } else if (!hot_since_.contains(d.group_id())) {
      hot_since_[d.group_id()] = now;
    }
    if (hot && now - hot_since_[d.group_id()] >= policy_.load_for) {
      hot_since_.erase(d.group_id());
      auto s = Split(d.group_id(), std::nullopt, SplitReason::kLoad, &load.samples);
      if (!s.ok()) {
        logging::Warning(logging::Group{d.group_id()}, "over --split-load-qps but not split: {}",
                         s.status().ToString());
      }
      last_split_ = now;
      may_split = false;
      continue;
    }
    if (policy_.size_bytes > 0 && driver_->IsLeader(d.group_id()) &&
        driver_->engine()->ApproximateSpanBytes(d.span_start(), d.span_end()) >
            policy_.size_bytes) {
      auto s = Split(d.group_id(), std::nullopt, SplitReason::kSize);
      if (!s.ok()) {
        logging::Warning(logging::Group{d.group_id()}, "over --split-size-bytes but not split: {}",
                         s.status().ToString());
      }
      last_split_ = now;
      may_split = false;
    }
  }
}

}  // namespace kv::server
