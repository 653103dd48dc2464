// Rebalancer: carries out placement (sharding/placement.h) on a running cluster. Every node
// plans over the whole cluster from its applied metadata (nodes, their labels and drain state;
// every keyspace shard and its voters) and starts the first planned move of a shard it leads;
// the plan is deterministic, so nodes agree on it as far as their metadata agree. At most one
// move runs per node at a time (a move takes as long as its new replica needs to catch up), so
// at most one move per leader, and placement itself allows a node in one planned move at once.
// A draining node, and one whose health report stays DEGRADED (gray failure), also hands away
// the leadership of every shard it leads. Leaders are spread: a node leading `leader_gap` more
// keyspace shards than another node holding a replica of one of them hands that leadership
// over, one per round (each node publishes its count in its node record). A node the metadata
// leader marked down (--dead-node-timeout) counts as gone: its replicas are re-created.
//
// Paused cluster-wide by `kvctl rebalance pause` (a replicated setting: kRebalanceKey). Tick()
// runs on the node's housekeeping thread; Status() from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/metadata.h"
#include "server/raft_driver.h"
#include "sharding/placement.h"

namespace kv::server {

class Rebalancer {
 public:
  // `move(shard, from, to)`: the move, run on this node as the shard's leader (blocking).
  using MoveFn = std::function<absl::StatusOr<std::vector<uint64_t>>(uint64_t shard, uint64_t from,
                                                                     uint64_t to)>;
  Rebalancer(RaftDriver* driver, const ClusterMetadata* metadata, MoveFn move,
             uint32_t leader_gap = 2);
  ~Rebalancer();  // waits for a move in progress

  void Tick();

  struct Status {
    bool paused = false;
    sharding::PlacementPlan plan;
    uint64_t moves_done = 0;
    uint64_t leader_transfers = 0;  // to spread leaders, or away from a degraded node
    uint64_t nodes_down = 0;
    bool moving = false;
    std::string last_error;
  };
  Status GetStatus() const;
  // The placement inputs as this node's metadata has them.
  std::vector<sharding::PlacementNode> PlacementNodes() const;
  std::vector<sharding::PlacedShard> PlacedShards() const;

 private:
  // Keyspace shards each node leads (as published; every node has an entry) and the nodes that
  // may take a leadership (up, not draining, not degraded).
  struct LeaderView {
    std::map<uint64_t, uint32_t> leaders;
    std::set<uint64_t> may_lead;
  };
  LeaderView Leaders() const;
  uint64_t LeadTarget(const sharding::PlacedShard& shard, const LeaderView& view) const;
  // Hands leaderships away from this node (draining, degraded) and spreads them (balance).
  void ShedLeaders(const std::vector<sharding::PlacedShard>& shards, LeaderView& view);
  // One of `candidates` handed over, counting this node's leaderships over `all`.
  void SpreadLeaders(const std::vector<sharding::PlacedShard>& candidates, const LeaderView& view,
                     const std::vector<sharding::PlacedShard>& all);

  RaftDriver* const driver_;
  const ClusterMetadata* const metadata_;
  MoveFn move_;
  const uint32_t leader_gap_;
  std::atomic<uint64_t> leader_transfers_{0};
  std::atomic<bool> moving_{false};
  std::atomic<uint64_t> moving_shard_{0};
  std::atomic<uint64_t> moves_done_{0};
  std::thread mover_;
  mutable absl::Mutex mu_;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv::server
