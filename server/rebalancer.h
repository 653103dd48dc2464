// Rebalancer: carries out placement (sharding/placement.h) on a running cluster. Every node
// plans over the whole cluster from its applied metadata (nodes, their labels and drain state;
// every keyspace shard and its voters) and starts the first planned move of a shard it leads;
// the plan is deterministic, so nodes agree on it as far as their metadata agree. At most one
// move runs per node at a time (a move takes as long as its new replica needs to catch up), so
// at most one move per leader, and placement itself allows a node in one planned move at once.
// A draining node also hands away the leadership of every shard it leads.
//
// Paused cluster-wide by `kvctl rebalance pause` (a replicated setting: kRebalanceKey). Tick()
// runs on the node's housekeeping thread; Status() from any thread.
#pragma once

#include <atomic>
#include <functional>
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
  Rebalancer(RaftDriver* driver, const ClusterMetadata* metadata, MoveFn move);
  ~Rebalancer();  // waits for a move in progress

  void Tick();

  struct Status {
    bool paused = false;
    sharding::PlacementPlan plan;
    uint64_t moves_done = 0;
    bool moving = false;
    std::string last_error;
  };
  Status GetStatus() const;
  // The placement inputs as this node's metadata has them.
  std::vector<sharding::PlacementNode> PlacementNodes() const;
  std::vector<sharding::PlacedShard> PlacedShards() const;

 private:
  RaftDriver* const driver_;
  const ClusterMetadata* const metadata_;
  MoveFn move_;
  std::atomic<bool> moving_{false};
  std::atomic<uint64_t> moves_done_{0};
  std::thread mover_;
  mutable absl::Mutex mu_;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv::server
