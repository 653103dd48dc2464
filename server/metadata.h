// Typed cluster metadata, kept by the metadata group in its system keyspace: one record per node
// (NodeRecord), one per group (GroupDescriptor), and the group id allocator; cluster settings
// (kill switch, limits) stay in ControlState. Each record is a protobuf with a format number;
// a record in a newer format than this build knows is refused, not guessed at.
//
// ClusterMetadata is this node's view, fed by the metadata group's system-key observer as
// entries apply (so every node sees the records of the entries it has applied). Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/v1/internal.pb.h"
#include "sharding/routing_map.h"

namespace kv::server {

inline constexpr uint32_t kMetadataFormat = 1;
inline constexpr char kNodeKeyPrefix[] = "meta/node/";
inline constexpr char kGroupKeyPrefix[] = "meta/group/";
inline constexpr char kGroupAllocatorKey[] = "meta/next-group";
inline constexpr char kKeyspaceKeyPrefix[] = "meta/keyspace/";
inline constexpr char kKeyspaceAllocatorKey[] = "meta/next-keyspace";
// "paused" while kvctl rebalance pause holds the rebalancer (server/rebalancer.h), "running"
// after kvctl rebalance resume.
inline constexpr char kRebalanceKey[] = "meta/rebalance";
// The first groups exist from the start, on every node: the metadata group and the default data
// group. Every other group is created from a descriptor with an allocated id.
inline constexpr uint64_t kMetadataGroupId = 0;
inline constexpr uint64_t kDefaultDataGroupId = 1;
inline constexpr uint64_t kFirstAllocatedGroupId = kDefaultDataGroupId + 1;
// Bounds on one CreateGroupsOp and on a descriptor (forwarded commands are checked with them).
inline constexpr int kMaxGroupsPerCreate = 1000;
inline constexpr int kMaxReplicasPerGroup = 7;

std::string NodeKey(uint64_t node_id);
std::string GroupKey(uint64_t group_id);
std::string KeyspaceKey(std::string_view name);
// The id in a NodeKey or GroupKey; nullopt if the key is not one.
std::optional<uint64_t> IdOfKey(std::string_view key, std::string_view prefix);

absl::StatusOr<internal::NodeRecord> ParseNodeRecord(std::string_view value);
absl::StatusOr<internal::GroupDescriptor> ParseGroupDescriptor(std::string_view value);
// A descriptor a creator may propose: replicas distinct, non-zero, within bounds.
absl::Status ValidateNewGroup(const internal::GroupDescriptor& d);
// A keyspace a creator may propose: a good name and strategy, 1 to kMaxGroupsPerCreate shards
// whose spans (given for keyspace 0) are disjoint and inside the keyspace.
absl::Status ValidateNewKeyspace(const internal::CreateKeyspaceOp& op);

class ClusterMetadata {
 public:
  // Called (on the applying thread) when a group's descriptor appears, changes, or is removed
  // (nullopt).
  using GroupObserver =
      std::function<void(uint64_t group_id, std::optional<internal::GroupDescriptor>)>;
  void SetGroupObserver(GroupObserver observer) { group_observer_ = std::move(observer); }

  // The system keyspace observer; returns false for keys that are not metadata records.
  bool OnSystemKey(const std::string& key, const std::string& value);

  std::vector<internal::NodeRecord> Nodes() const;
  std::optional<internal::NodeRecord> Node(uint64_t node_id) const;
  // ": node N at ADDR" for a voter of `group` that is up and has a client address ("" if none):
  // what a node without a replica tells a client to ask instead.
  std::string AReplicaToAsk(uint64_t group) const;
  std::vector<internal::GroupDescriptor> Groups() const;
  bool HasGroup(uint64_t group_id) const;
  uint64_t RoutingVersion() const;
  // Keyspaces created with kvctl keyspace create (the default keyspace has no record).
  std::vector<internal::KeyspaceRecord> Keyspaces() const;
  std::optional<internal::KeyspaceRecord> Keyspace(std::string_view name) const;
  // The descriptor of the shard (group) whose span holds `encoded_key`, as this node applied it.
  std::optional<internal::GroupDescriptor> ShardFor(std::string_view encoded_key) const;
  bool RebalancePaused() const;
  // The shards of keyspace `keyspace_id`, ordered by span.
  std::vector<internal::GroupDescriptor> ShardsOf(uint64_t keyspace_id) const;

 private:
  GroupObserver group_observer_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, internal::NodeRecord> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, internal::GroupDescriptor> groups_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, internal::KeyspaceRecord> keyspaces_ ABSL_GUARDED_BY(mu_);
  bool rebalance_paused_ ABSL_GUARDED_BY(mu_) = false;
  sharding::RoutingMap routing_ ABSL_GUARDED_BY(mu_);  // groups that serve a keyspace's span
};

}  // namespace kv::server
