#include "server/rebalancer.h"

#include "server/logging.h"
#include "sharding/key_codec.h"
#include "sharding/keyspace.h"

namespace kv::server {

Rebalancer::Rebalancer(RaftDriver* driver, const ClusterMetadata* metadata, MoveFn move)
    : driver_(driver), metadata_(metadata), move_(std::move(move)) {}

Rebalancer::~Rebalancer() {
  if (mover_.joinable()) mover_.join();
}

std::vector<sharding::PlacementNode> Rebalancer::PlacementNodes() const {
  std::vector<sharding::PlacementNode> nodes;
  for (const auto& n : metadata_->Nodes()) {
    if (n.state() == internal::NodeRecord::REMOVED) continue;
    sharding::PlacementNode p;
    p.id = n.node_id();
    p.region = n.region();
    p.zone = n.zone();
    p.draining = n.state() == internal::NodeRecord::DRAINING;
    nodes.push_back(p);
  }
  return nodes;
}

std::vector<sharding::PlacedShard> Rebalancer::PlacedShards() const {
  std::vector<sharding::PlacedShard> shards;
  for (const auto& d : metadata_->Groups()) {
    if (d.span_end().empty()) continue;  // not a keyspace shard
    sharding::PlacedShard s;
    s.id = d.group_id();
    s.replicas.assign(d.voters().begin(), d.voters().end());
    if (static_cast<sharding::Strategy>(d.strategy()) == sharding::Strategy::kGeo &&
        d.span_start().size() > 8) {
      if (auto region = sharding::RegionOf(d.span_start().substr(8))) s.region = *region;
    }
    shards.push_back(std::move(s));
  }
  return shards;
}

Rebalancer::Status Rebalancer::GetStatus() const {
  Status s;
  s.paused = metadata_->RebalancePaused();
  s.plan = sharding::PlanMoves(PlacementNodes(), PlacedShards(), sharding::PlacementOptions{});
  s.moves_done = moves_done_.load();
  s.moving = moving_.load();
  absl::MutexLock lock(&mu_);
  s.last_error = last_error_;
  return s;
}

void Rebalancer::Tick() {
  auto nodes = PlacementNodes();
  uint64_t self = driver_->node_id();
  bool draining = false;
  for (const auto& n : nodes) draining = draining || (n.id == self && n.draining);
  auto shards = PlacedShards();
  if (draining) {
    // Leadership first: a drained node leads nothing, and a leader is never moved away from.
    for (const auto& s : shards) {
      if (!driver_->IsLeader(s.id)) continue;
      for (uint64_t v : s.replicas) {
        if (v != self) {
          driver_->TransferLeadership(s.id, v);
          break;
        }
      }
    }
  }
  if (metadata_->RebalancePaused() || moving_.load()) return;
  sharding::PlacementOptions options;
  options.max_moves = 1000;  // every node finds the first move it can carry out
  sharding::PlacementPlan plan = sharding::PlanMoves(nodes, shards, options);
  for (const auto& m : plan.moves) {
    if (!driver_->IsLeader(m.shard_id)) continue;
    if (m.from == self) {
      // A leader is not moved away from: hand the shard to another replica, which moves it.
      for (const auto& s : shards) {
        if (s.id != m.shard_id) continue;
        for (uint64_t v : s.replicas) {
          if (v != self) {
            driver_->TransferLeadership(s.id, v);
            return;
          }
        }
      }
      continue;
    }
    if (mover_.joinable()) mover_.join();
    moving_.store(true);
    logging::Info(logging::Group{m.shard_id},
                  "rebalance: moving the replica on node {} to node {} ({})", m.from, m.to,
                  m.reason);
    mover_ = std::thread([this, m] {
      auto r = move_(m.shard_id, m.from, m.to);
      if (r.ok()) {
        moves_done_.fetch_add(1);
      } else {
        logging::Warning(logging::Group{m.shard_id}, "rebalance: move to node {} failed: {}", m.to,
                         r.status().ToString());
        absl::MutexLock lock(&mu_);
        last_error_ = r.status().ToString();
      }
      moving_.store(false);
    });
    return;
  }
}

}  // namespace kv::server
