#include "sharding/placement.h"

#include <algorithm>
#include <map>
#include <set>

namespace kv::sharding {
namespace {

const PlacementNode* Find(const std::vector<PlacementNode>& nodes, uint64_t id) {
  for (const auto& n : nodes) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

bool Usable(const PlacementNode& n) { return n.up && !n.draining; }

bool InRegion(const PlacementNode& n, const PlacedShard& s) {
  return s.region.empty() || n.region == s.region;
}

// Replicas per usable node (every usable node present, with 0 when it holds none).
std::map<uint64_t, int> Counts(const std::vector<PlacementNode>& nodes,
                               const std::vector<PlacedShard>& shards) {
  std::map<uint64_t, int> counts;
  for (const auto& n : nodes) {
    if (Usable(n)) counts[n.id] = 0;
  }
  for (const auto& s : shards) {
    for (uint64_t r : s.replicas) {
      if (auto it = counts.find(r); it != counts.end()) ++it->second;
    }
  }
  return counts;
}

}  // namespace

bool MayPlace(const std::vector<PlacementNode>& nodes, const PlacedShard& shard, uint64_t to,
              uint64_t replacing) {
  const PlacementNode* node = Find(nodes, to);
  if (!node || !Usable(*node) || !InRegion(*node, shard)) return false;
  if (std::find(shard.replicas.begin(), shard.replicas.end(), to) != shard.replicas.end()) {
    return false;
  }
  // Zones: when the nodes this shard may use span at least as many zones as it has replicas,
  // no two of its replicas share one.
  std::set<std::string> zones;
  for (const auto& n : nodes) {
    if (Usable(n) && InRegion(n, shard)) zones.insert(n.zone);
  }
  if (zones.size() < shard.replicas.size()) return true;
  for (uint64_t r : shard.replicas) {
    if (r == replacing) continue;
    const PlacementNode* other = Find(nodes, r);
    if (other && other->zone == node->zone) return false;
  }
  return true;
}

PlacementPlan PlanMoves(const std::vector<PlacementNode>& nodes,
                        const std::vector<PlacedShard>& input, const PlacementOptions& options) {
  PlacementPlan plan;
  std::vector<PlacedShard> shards = input;
  std::sort(shards.begin(), shards.end(),
            [](const PlacedShard& a, const PlacedShard& b) { return a.id < b.id; });
  std::map<uint64_t, int> counts = Counts(nodes, shards);
  std::map<uint64_t, int> busy;  // moves each node takes part in, in this plan
  auto load = [&](uint64_t id) {
    const PlacementNode* n = Find(nodes, id);
    return n ? n->load : 0.0;
  };
  // The best target for a replica of `s` leaving `from`: fewest replicas, then least load.
  auto target_for = [&](const PlacedShard& s, uint64_t from) -> uint64_t {
    uint64_t best = 0;
    for (const auto& [id, count] : counts) {
      if (busy[id] >= options.max_moves_per_node || !MayPlace(nodes, s, id, from)) continue;
      if (best == 0 || count < counts[best] || (count == counts[best] && load(id) < load(best))) {
        best = id;
      }
    }
    return best;
  };
  auto take = [&](PlacedShard& s, uint64_t from, uint64_t to, const char* reason) {
    plan.moves.push_back({s.id, from, to, reason});
    std::replace(s.replicas.begin(), s.replicas.end(), from, to);
    if (counts.contains(from)) --counts[from];
    ++counts[to];
    ++busy[from];
    ++busy[to];
  };
  auto full = [&] { return static_cast<int>(plan.moves.size()) >= options.max_moves; };

  // 1. Replicas that must leave their node: draining, or down for good.
  for (auto& s : shards) {
    for (uint64_t r : std::vector<uint64_t>(s.replicas)) {
      const PlacementNode* n = Find(nodes, r);
      if (n && Usable(*n)) continue;
      const char* reason = n && n->draining && n->up ? "drain" : "dead node";
      uint64_t to = full() || busy[r] >= options.max_moves_per_node ? 0 : target_for(s, r);
      if (to != 0) {
        take(s, r, to, reason);
        continue;
      }
      bool anywhere = false;
      for (const auto& [id, count] : counts) anywhere = anywhere || MayPlace(nodes, s, id, r);
      if (!anywhere) {
        plan.unplaceable.push_back(
            {s.id, r,
             s.region.empty()
                 ? "no other node that is up and holds no replica of it"
                 : "no other node in region " + s.region + " that is up and holds none of it"});
      }
    }
  }
  // 2. Balance: from the fullest node to the emptiest one a shard may use, while they differ
  // by more than one.
  while (options.balance && !full()) {
    bool moved = false;
    std::vector<std::pair<int, uint64_t>> by_count;
    for (const auto& [id, count] : counts) by_count.push_back({-count, id});
    std::sort(by_count.begin(), by_count.end());  // fullest first, then by id
    for (const auto& [negative, from] : by_count) {
      if (busy[from] >= options.max_moves_per_node) continue;
      for (auto& s : shards) {
        if (std::find(s.replicas.begin(), s.replicas.end(), from) == s.replicas.end()) continue;
        uint64_t to = target_for(s, from);
        if (to != 0 && counts[to] + 1 < counts[from]) {
          take(s, from, to, "balance");
          moved = true;
          break;
        }
      }
      if (moved) break;
    }
    if (!moved) break;
  }
  return plan;
}

}  // namespace kv::sharding
