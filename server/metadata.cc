#include "server/metadata.h"

#include <cstdio>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/logging.h"
#include "sharding/key_codec.h"
#include "sharding/key_range.h"

namespace kv::server {
namespace {

std::string KeyWithId(std::string_view prefix, uint64_t id) {
  // Zero-padded, so that the records' order in the keyspace is numeric order.
  return absl::StrFormat("%s%020u", prefix, id);
}

template <typename Record>
absl::StatusOr<Record> ParseRecord(std::string_view value, const char* what) {
  Record r;
  if (!r.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return absl::DataLossError(absl::StrCat(what, " record does not decode"));
  }
  if (r.format() > kMetadataFormat) {
    return absl::FailedPreconditionError(absl::StrCat(what, " record has format ", r.format(),
                                                      "; this kvd knows up to ", kMetadataFormat,
                                                      " (upgrade this node)"));
  }
  return r;
}

}  // namespace

std::string NodeKey(uint64_t node_id) { return KeyWithId(kNodeKeyPrefix, node_id); }
std::string GroupKey(uint64_t group_id) { return KeyWithId(kGroupKeyPrefix, group_id); }

std::string KeyspaceKey(std::string_view name) {
  return absl::StrCat(kKeyspaceKeyPrefix, std::string(name));
}

std::optional<uint64_t> IdOfKey(std::string_view key, std::string_view prefix) {
  if (!key.starts_with(prefix)) return std::nullopt;
  uint64_t id = 0;
  std::string_view digits = key.substr(prefix.size());
  if (!absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &id)) {
    return std::nullopt;
  }
  return id;
}

absl::StatusOr<internal::NodeRecord> ParseNodeRecord(std::string_view value) {
  return ParseRecord<internal::NodeRecord>(value, "node");
}

absl::StatusOr<internal::GroupDescriptor> ParseGroupDescriptor(std::string_view value) {
  return ParseRecord<internal::GroupDescriptor>(value, "group");
}

absl::Status ValidateNewGroup(const internal::GroupDescriptor& d) {
  std::set<uint64_t> seen;
  int replicas = d.voters_size() + d.learners_size();
  if (d.voters_size() == 0 || replicas > kMaxReplicasPerGroup) {
    return absl::InvalidArgumentError(
        absl::StrCat("a group needs 1 to ", kMaxReplicasPerGroup, " replicas, with a voter"));
  }
  for (const auto* list : {&d.voters(), &d.learners()}) {
    for (uint64_t id : *list) {
      if (id == 0 || !seen.insert(id).second) {
        return absl::InvalidArgumentError("group replicas must be distinct node ids >= 1");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateNewKeyspace(const internal::CreateKeyspaceOp& op) {
  if (auto s = sharding::ValidateKeyspaceName(op.keyspace().name()); !s.ok()) return s;
  if (op.keyspace().strategy() > static_cast<uint32_t>(sharding::Strategy::kGeo)) {
    return absl::InvalidArgumentError("unknown keyspace strategy");
  }
  for (const auto& r : op.keyspace().regions()) {
    if (auto s = sharding::ValidateRegionName(r); !s.ok()) return s;
  }
  if (op.groups().empty() || op.groups().size() > kMaxGroupsPerCreate) {
    return absl::InvalidArgumentError(
        absl::StrCat("a keyspace starts with 1 to ", kMaxGroupsPerCreate, " shards"));
  }
  std::vector<sharding::KeyRange> spans;
  for (const auto& g : op.groups()) {
    if (auto s = ValidateNewGroup(g); !s.ok()) return s;
    sharding::KeyRange span{g.span_start(), g.span_end()};
    if (span.empty() || span.start < sharding::KeyspaceBegin(0) ||
        span.end > sharding::KeyspaceEnd(0)) {
      return absl::InvalidArgumentError("a shard's span must be a non-empty part of the keyspace");
    }
    for (const auto& other : spans) {
      if (other.Overlaps(span)) return absl::InvalidArgumentError("shard spans overlap");
    }
    spans.push_back(std::move(span));
  }
  return absl::OkStatus();
}

bool ClusterMetadata::OnSystemKey(const std::string& key, const std::string& value) {
  if (key == kRebalanceKey) {
    absl::MutexLock lock(&mu_);
    rebalance_paused_ = value == "paused";
    return true;
  }
  if (auto id = IdOfKey(key, kNodeKeyPrefix)) {
    auto record = ParseNodeRecord(value);
    if (!record.ok()) {
      logging::Error("ignoring metadata {}: {}", key, record.status().ToString());
      return true;
    }
    absl::MutexLock lock(&mu_);
    nodes_[*id] = *std::move(record);
    return true;
  }
  if (auto id = IdOfKey(key, kGroupKeyPrefix)) {
    if (*id < kFirstAllocatedGroupId) {
      // The first groups are never described (nor removed) by records: a record naming one
      // can only come from a bug or a forged command, and acting on it could destroy them.
      logging::Error("ignoring metadata {}: groups 0 and 1 have no descriptor", key);
      return true;
    }
    std::optional<internal::GroupDescriptor> descriptor;
    if (!value.empty()) {  // empty: the group was removed
      auto parsed = ParseGroupDescriptor(value);
      if (!parsed.ok()) {
        logging::Error("ignoring metadata {}: {}", key, parsed.status().ToString());
        return true;
      }
      descriptor = *std::move(parsed);
    }
    {
      absl::MutexLock lock(&mu_);
      if (descriptor) {
        groups_[*id] = *descriptor;
        if (!descriptor->span_end().empty()) {
          sharding::ShardDescriptor shard;
          shard.shard_id = *id;
          shard.keyspace_id = descriptor->keyspace_id();
          shard.span = {descriptor->span_start(), descriptor->span_end()};
          shard.epoch = {descriptor->epoch().generation(), descriptor->epoch().conf_version()};
          shard.replicas.assign(descriptor->voters().begin(), descriptor->voters().end());
          routing_.Apply(shard);
        }
      } else {
        groups_.erase(*id);
        routing_.Remove(*id);
      }
    }
    if (group_observer_) group_observer_(*id, std::move(descriptor));
    return true;
  }
  if (key.starts_with(kKeyspaceKeyPrefix)) {
    std::string name = key.substr(sizeof(kKeyspaceKeyPrefix) - 1);
    internal::KeyspaceRecord record;
    if (!value.empty() && (!record.ParseFromString(value) || record.format() > kMetadataFormat)) {
      logging::Error("ignoring metadata {}: not a keyspace record this build reads", key);
      return true;
    }
    absl::MutexLock lock(&mu_);
    if (value.empty()) {
      keyspaces_.erase(name);  // dropped
    } else {
      keyspaces_[name] = std::move(record);
    }
    return true;
  }
  return key == kGroupAllocatorKey || key == kKeyspaceAllocatorKey;
}

std::optional<internal::GroupDescriptor> ClusterMetadata::ShardFor(
    std::string_view encoded_key) const {
  absl::MutexLock lock(&mu_);
  const sharding::ShardDescriptor* shard = routing_.Lookup(encoded_key);
  if (!shard) return std::nullopt;
  auto it = groups_.find(shard->shard_id);
  if (it == groups_.end()) return std::nullopt;
  return it->second;
}

uint64_t ClusterMetadata::RoutingVersion() const {
  absl::MutexLock lock(&mu_);
  return routing_.version();
}

bool ClusterMetadata::HasGroup(uint64_t group_id) const {
  absl::MutexLock lock(&mu_);
  return groups_.contains(group_id);
}

std::vector<internal::GroupDescriptor> ClusterMetadata::ShardsOf(uint64_t keyspace_id) const {
  absl::MutexLock lock(&mu_);
  std::vector<internal::GroupDescriptor> out;
  for (const auto* shard : routing_.Overlapping(
           {sharding::KeyspaceBegin(keyspace_id), sharding::KeyspaceEnd(keyspace_id)})) {
    if (auto it = groups_.find(shard->shard_id); it != groups_.end()) out.push_back(it->second);
  }
  return out;
}

std::vector<internal::KeyspaceRecord> ClusterMetadata::Keyspaces() const {
  absl::MutexLock lock(&mu_);
  std::vector<internal::KeyspaceRecord> out;
  for (const auto& [name, k] : keyspaces_) out.push_back(k);
  return out;
}

std::optional<internal::KeyspaceRecord> ClusterMetadata::Keyspace(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = keyspaces_.find(std::string(name));
  if (it == keyspaces_.end()) return std::nullopt;
  return it->second;
}

bool ClusterMetadata::RebalancePaused() const {
  absl::MutexLock lock(&mu_);
  return rebalance_paused_;
}

std::vector<internal::NodeRecord> ClusterMetadata::Nodes() const {
  absl::MutexLock lock(&mu_);
  std::vector<internal::NodeRecord> out;
  for (const auto& [id, n] : nodes_) out.push_back(n);
  return out;
}

std::optional<internal::NodeRecord> ClusterMetadata::Node(uint64_t node_id) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second;
}

std::vector<internal::GroupDescriptor> ClusterMetadata::Groups() const {
  absl::MutexLock lock(&mu_);
  std::vector<internal::GroupDescriptor> out;
  for (const auto& [id, g] : groups_) out.push_back(g);
  return out;
}

std::string ClusterMetadata::AReplicaToAsk(uint64_t group) const {
  for (const auto& d : Groups()) {
    if (d.group_id() != group) continue;
    for (uint64_t v : d.voters()) {
      auto n = Node(v);
      if (n && !n->down() && !n->client_address().empty()) {
        return absl::StrCat(": node ", v, " at ", n->client_address());
      }
    }
  }
  return "";
}

}  // namespace kv::server
