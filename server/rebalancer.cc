#include "server/rebalancer.h"

#include <map>
#include <set>

#include "server/logging.h"
#include "sharding/key_codec.h"
#include "sharding/keyspace.h"

namespace kv::server {

Rebalancer::Rebalancer(RaftDriver* driver, const ClusterMetadata* metadata, MoveFn move,
                       uint32_t leader_gap)
    : driver_(driver), metadata_(metadata), move_(std::move(move)), leader_gap_(leader_gap) {}

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
    p.up = !n.down();
    p.load = n.leaders();
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
  s.leader_transfers = leader_transfers_.load();
  for (const auto& n : metadata_->Nodes()) {
    if (n.state() != internal::NodeRecord::REMOVED && n.down()) ++s.nodes_down;
  }
  s.moving = moving_.load();
  absl::MutexLock lock(&mu_);
  s.last_error = last_error_;
  return s;
}

Rebalancer::LeaderView Rebalancer::Leaders() const {
  LeaderView view;
  for (const auto& n : metadata_->Nodes()) {
    view.leaders[n.node_id()] = n.leaders();
    if (n.state() == internal::NodeRecord::UP && !n.down() && !n.degraded()) {
      view.may_lead.insert(n.node_id());
    }
  }
  return view;
}

uint64_t Rebalancer::LeadTarget(const sharding::PlacedShard& shard, const LeaderView& view) const {
  // The replica on the node leading fewest, among those that may lead; 0 if none.
  uint64_t to = 0;
  for (uint64_t v : shard.replicas) {
    if (v == driver_->node_id() || !view.may_lead.contains(v)) continue;
    if (to == 0 || view.leaders.at(v) < view.leaders.at(to)) to = v;
  }
  return to;
}

void Rebalancer::ShedLeaders(const std::vector<sharding::PlacedShard>& shards, LeaderView& view) {
  for (const auto& s : shards) {
    if (!driver_->IsLeader(s.id)) continue;
    uint64_t to = LeadTarget(s, view);
    if (to == 0) continue;  // nowhere better: keep leading
    driver_->TransferLeadership(s.id, to);
    ++view.leaders[to];
    leader_transfers_.fetch_add(1);
  }
}

void Rebalancer::SpreadLeaders(const std::vector<sharding::PlacedShard>& candidates,
                               const LeaderView& view,
                               const std::vector<sharding::PlacedShard>& all) {
  if (leader_gap_ == 0) return;
  // This node's own count is known now; the others' as they last published them.
  uint32_t mine = 0;
  for (const auto& s : all) mine += driver_->IsLeader(s.id) ? 1 : 0;
  // One transfer per round: the counts it changes are published before the next one.
  uint64_t best_shard = 0, best_to = 0;
  for (const auto& s : candidates) {
    if (!driver_->IsLeader(s.id)) continue;
    uint64_t to = LeadTarget(s, view);
    if (to == 0 || view.leaders.at(to) + leader_gap_ > mine) continue;
    if (best_to == 0 || view.leaders.at(to) < view.leaders.at(best_to)) {
      best_shard = s.id;
      best_to = to;
    }
  }
  if (best_to == 0) return;
  logging::Info(logging::Group{best_shard},
                "rebalance: handing leadership to node {} (it leads {} shards, this node {})",
                best_to, view.leaders.at(best_to), mine);
  driver_->TransferLeadership(best_shard, best_to);
  leader_transfers_.fetch_add(1);
}

void Rebalancer::Tick() {
  auto nodes = PlacementNodes();
  uint64_t self = driver_->node_id();
  bool shed = false;
  for (const auto& n : nodes) shed = shed || (n.id == self && n.draining);
  if (auto me = metadata_->Node(self)) shed = shed || me->degraded();
  auto shards = PlacedShards();
  LeaderView view = Leaders();
  // Leadership first: a drained node leads nothing, and a leader is never moved away from.
  if (shed) ShedLeaders(shards, view);
  if (metadata_->RebalancePaused()) return;
  sharding::PlacementOptions options;
  options.max_moves = 1000;  // every node finds the first move it can carry out
  sharding::PlacementPlan plan = sharding::PlanMoves(nodes, shards, options);
  if (!shed) {
    // Leaders of shards with a planned or running move stay put: handing one to the replica a
    // move takes away would hand it straight back, over and over.
    std::set<uint64_t> settled_only;
    for (const auto& m : plan.moves) settled_only.insert(m.shard_id);
    if (moving_.load()) settled_only.insert(moving_shard_.load());
    std::vector<sharding::PlacedShard> settled;
    for (const auto& sh : shards) {
      if (!settled_only.contains(sh.id)) settled.push_back(sh);
    }
    SpreadLeaders(settled, view, shards);
  }
  if (moving_.load()) return;
  for (const auto& m : plan.moves) {
    if (!driver_->IsLeader(m.shard_id)) continue;
    if (m.from == self) {
      // A leader is not moved away from: hand the shard to another replica, which moves it.
      for (const auto& s : shards) {
        if (s.id != m.shard_id) continue;
        if (uint64_t to = LeadTarget(s, view); to != 0) {
          driver_->TransferLeadership(s.id, to);
          return;
        }
      }
      continue;
    }
    if (mover_.joinable()) mover_.join();
    moving_.store(true);
    moving_shard_.store(m.shard_id);
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
