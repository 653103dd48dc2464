// Placement: where a shard's replicas should be, as a pure function (DESIGN.md, "Placement"):
// given the nodes (labels, state, load) and each shard's replicas and policy, the next replica
// moves, or why a shard cannot be placed. Deterministic: the same input gives the same plan.
//
// Hard constraints are never relaxed: a replica only goes to a node that is up and not
// draining, that holds no replica of the shard yet, that is in the shard's region (geo), and
// whose zone holds none of the shard's other replicas whenever the eligible nodes span enough
// zones. A shard whose replica must leave a node (draining, or down past the dead-node timeout)
// and that has nowhere to go stays where it is and is reported, under-replicated rather than
// out of its region. Soft goal: replicas spread evenly, each node within one of the others
// (among the nodes a shard may use), fewest replicas and then lowest load first.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kv::sharding {

struct PlacementNode {
  uint64_t id = 0;
  std::string region, zone;
  bool up = true;         // false: down past the dead-node timeout (its replicas are re-made)
  bool draining = false;  // kvctl node drain: every replica leaves it
  double load = 0;        // requests per second, or bytes: a tie-breaker between equal counts
};

struct PlacedShard {
  uint64_t id = 0;
  std::vector<uint64_t> replicas;
  std::string region;  // geo: the only region its replicas may be in ("" for any)
};

struct ReplicaMove {
  uint64_t shard_id = 0;
  uint64_t from = 0, to = 0;
  std::string reason;  // "drain", "dead node", "balance"
};

struct Unplaceable {
  uint64_t shard_id = 0;
  uint64_t stuck_on = 0;  // the node its replica should leave
  std::string reason;
};

struct PlacementPlan {
  std::vector<ReplicaMove> moves;
  std::vector<Unplaceable> unplaceable;
};

struct PlacementOptions {
  int max_moves = 1;           // moves in one plan
  int max_moves_per_node = 1;  // moves a node takes part in (as source or target) at once
  bool balance = true;         // also moves for an even spread (off: only drains and dead nodes)
};

PlacementPlan PlanMoves(const std::vector<PlacementNode>& nodes,
                        const std::vector<PlacedShard>& shards, const PlacementOptions& options);

// Whether `to` may take a replica of `shard` (the hard constraints above).
bool MayPlace(const std::vector<PlacementNode>& nodes, const PlacedShard& shard, uint64_t to,
              uint64_t replacing = 0);

}  // namespace kv::sharding
