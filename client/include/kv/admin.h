// kv::AdminClient: cluster administration: status of each node, membership changes and
// leadership transfer. Changes are sent to the leader, which the client finds by itself.
// Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kv/tls.h"

namespace kv {

struct MemberInfo {
  uint64_t id = 0;
  std::string address;  // peer address (Raft traffic)
  bool voter = false;
  // As seen by the answering node (replication detail is filled in by the leader).
  uint64_t match_index = 0;
  uint64_t applied_index = 0;
  uint64_t lag = 0;
  bool reachable = false;
  std::string state;
  std::string client_address;  // where clients reach it ("" until the answering node heard it)
};

// A node as the cluster's metadata records it.
struct NodeInfo {
  uint64_t id = 0;
  std::string peer_address;
  std::string client_address;
  std::string region;
  std::string zone;
  std::string state;      // up, draining, removed
  bool down = false;      // unheard from for kvd's --dead-node-timeout: replicas re-created
  bool degraded = false;  // a gray failure: it sheds its leaderships
  uint32_t leaders = 0;   // keyspace shards it leads
};

// A Raft group: its replicas and epoch; leader, term, applied index and quiet state as seen by
// the answering node when it hosts a replica (hosted_here).
struct GroupInfo {
  uint64_t id = 0;
  std::vector<uint64_t> voters;
  std::vector<uint64_t> learners;
  uint64_t generation = 0;
  uint64_t conf_version = 0;
  bool hosted_here = false;
  uint64_t leader_id = 0;
  uint64_t term = 0;
  uint64_t applied_index = 0;
  bool quiesced = false;
  std::vector<uint64_t> missing_on;  // members that host no replica of it (destroyed, never made)
};

// A keyspace and its shards (kvctl keyspace describe). A shard's span is shown as user keys for
// range and geo keyspaces ("" = the keyspace's start or end) and as slot numbers for hash.
struct ShardInfo {
  uint64_t shard_id = 0;  // its Raft group
  std::string start, end, region;
  std::vector<uint64_t> replicas;
  uint64_t leader_id = 0;
  uint64_t generation = 0;
  uint64_t conf_version = 0;
  uint64_t approximate_bytes = 0;
};
struct KeyspaceInfo {
  uint64_t id = 0;
  std::string name;
  std::string strategy;  // range, hash, geo
  std::vector<std::string> regions;
  uint32_t replicas = 0;
  std::vector<ShardInfo> shards;
};
struct KeyspaceSpec {
  std::string name;
  std::string strategy = "range";
  uint32_t shards = 0;                    // hash: 0 = 8
  uint32_t replicas = 0;                  // 0: 3, or every node when fewer
  std::vector<std::string> split_points;  // range
  std::vector<std::string> regions;       // geo
};

// Backups (AdminClient::SaveSnapshot).
struct SnapshotProgress {
  uint64_t shard_id = 0;  // the shard just saved
  size_t shards_done = 0, shards_total = 0;
  uint64_t keys = 0, bytes = 0;  // saved so far
};
struct SnapshotSummary {
  std::string path;
  size_t shards = 0;
  uint64_t keys = 0;
  uint64_t bytes = 0;  // of the file
  std::string sha256;  // of the file, hex (what `sha256sum` prints)
  int attempts = 1;    // a shard that split while it was saved makes the save start over
};

// kvctl node drain: the node's state and what it still holds.
struct DrainStatus {
  std::string state;  // draining, up
  uint32_t replicas_left = 0;
  uint32_t leaders_left = 0;
};
// kvctl rebalance: the rebalancer's switch and, as the answering node sees it, the next moves.
struct PlannedMoveInfo {
  uint64_t shard_id = 0, from = 0, to = 0;
  std::string reason;
};
struct UnplaceableInfo {
  uint64_t shard_id = 0, stuck_on = 0;
  std::string reason;
};
struct RebalanceInfo {
  bool paused = false;
  std::vector<PlannedMoveInfo> pending;
  std::vector<UnplaceableInfo> unplaceable;
  uint64_t moves_done = 0;
  uint32_t moving = 0;
  std::string last_error;
  uint64_t leader_transfers = 0;
  uint64_t nodes_down = 0;
};

struct AdminOptions {
  std::vector<std::string> endpoints;  // client addresses of one or more nodes
  absl::Duration timeout = absl::Seconds(5);
  // Membership changes and leader transfer need the admin role: this token (kvd
  // --admin-token-file) or a client certificate named `admin` in `tls`.
  std::string admin_token;
  TlsOptions tls;
};

struct NodeStatus {
  std::string endpoint;
  uint64_t node_id = 0;
  std::string role;
  uint64_t term = 0;
  uint64_t leader_id = 0;
  uint64_t commit_index = 0;
  uint64_t applied_index = 0;
  uint64_t first_index = 0;
  uint64_t last_index = 0;
  uint64_t fsyncs = 0;             // synced writes of Raft state since the node started
  uint64_t entries_persisted = 0;  // log entries persisted since the node started
  std::vector<MemberInfo> members;
};

class AdminClient {
 public:
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(AdminOptions options);
  // Plain text, no admin token: status only (changes are refused).
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(std::vector<std::string> endpoints,
                                                              absl::Duration timeout);
  ~AdminClient();

  // One entry per endpoint that answered; unreachable endpoints are reported as errors in
  // `unreachable`.
  std::vector<NodeStatus> Status(std::vector<std::string>* unreachable = nullptr);
  // Membership changes (on the leader). New nodes join as learners; promote once caught up.
  absl::StatusOr<uint64_t> AddLearner(uint64_t node_id, const std::string& address);
  absl::StatusOr<uint64_t> Promote(uint64_t node_id);
  absl::StatusOr<uint64_t> Remove(uint64_t node_id);
  // Hands leadership to `node_id` (0: the most caught-up voter); returns the new leader.
  absl::StatusOr<uint64_t> TransferLeader(uint64_t node_id);

  // Topology, answered by the first endpoint that answers, from its applied metadata.
  absl::StatusOr<std::vector<NodeInfo>> ListNodes();
  absl::StatusOr<std::vector<GroupInfo>> ListGroups();
  // Creates `count` empty groups of `replicas` voters each (0: 3, or every node when fewer);
  // returns their ids. Admin role. (Until sharding routes keys to them they serve no data.)
  absl::StatusOr<std::vector<uint64_t>> CreateGroups(uint32_t count, uint32_t replicas);
  absl::Status RemoveGroup(uint64_t group_id);

  // Keyspaces. Create and drop need the admin role; drop refuses a keyspace holding keys unless
  // `force`.
  absl::StatusOr<KeyspaceInfo> CreateKeyspace(const KeyspaceSpec& spec);
  absl::StatusOr<std::vector<KeyspaceInfo>> ListKeyspaces();
  absl::StatusOr<KeyspaceInfo> DescribeKeyspace(const std::string& name);
  absl::Status DropKeyspace(const std::string& name, bool force);
  // Splits a keyspace shard online at user key `at` (nullopt: in the middle of its keys);
  // returns the keyspace as it stands after, and sets *child to the new shard's id.
  // kvctl shard merge: merges `shard_id` with the next shard of its range keyspace; sets the
  // surviving and the absorbed shard's ids.
  absl::StatusOr<KeyspaceInfo> MergeShard(uint64_t shard_id, uint64_t* survivor = nullptr,
                                          uint64_t* absorbed = nullptr);
  absl::StatusOr<KeyspaceInfo> SplitShard(uint64_t shard_id, std::optional<std::string> at,
                                          uint64_t* child = nullptr);

  // Moves the replica of a shard on node `from` to node `to` (kvctl shard move), online, through
  // one joint membership change on the shard's leader (found by asking every endpoint); returns
  // the shard's voters after the move. Admin role. Takes as long as the new replica needs to
  // catch up (at most about a minute and a half).
  absl::StatusOr<std::vector<uint64_t>> MoveReplica(uint64_t shard_id, uint64_t from, uint64_t to);

  // Starts (or, with `undo`, ends) the drain of a node: the rebalancer moves its replicas and it
  // hands away its leaderships. Call again to see what is left; 0 replicas left: safe to remove.
  absl::StatusOr<DrainStatus> DrainNode(uint64_t node_id, bool undo = false);
  enum class RebalanceAction { kStatus, kPause, kResume };
  absl::StatusOr<RebalanceInfo> Rebalance(RebalanceAction action);

  // Saves a backup of every shard (the metadata group, the default keyspace, every keyspace's
  // shards) to `path`: a tar file of one RocksDB SST file per shard and a manifest with their
  // SHA-256, written to PATH.partial and renamed once complete. Each shard is read at a
  // linearizable point after the call began, from a node that hosts it, while the cluster serves
  // traffic: every write acknowledged before the call is in the file. Admin role. `progress`
  // runs after each shard. `kvd --restore-from PATH` seeds a new cluster from it.
  absl::StatusOr<SnapshotSummary> SaveSnapshot(
      const std::string& path, std::function<void(const SnapshotProgress&)> progress = nullptr);

 private:
  struct Impl;
  explicit AdminClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kv
