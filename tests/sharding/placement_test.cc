// Placement (sharding/placement.h): scripted cases for drains, dead nodes, regions and zones,
// then properties over random clusters: no hard constraint ever broken, the same plan for the
// same input, a refusal when nothing fits, and an even spread reached from any start.
#include "sharding/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

namespace kv::sharding {
namespace {

PlacementOptions Unlimited() {
  PlacementOptions o;
  o.max_moves = 1000;
  o.max_moves_per_node = 1000;
  return o;
}

std::vector<PlacementNode> Nodes(int n, const std::string& region = "") {
  std::vector<PlacementNode> nodes;
  for (int i = 1; i <= n; ++i) {
    PlacementNode node;
    node.id = static_cast<uint64_t>(i);
    node.region = region;
    node.zone = "z" + std::to_string(i);
    nodes.push_back(node);
  }
  return nodes;
}

TEST(PlacementTest, ADrainedNodeGivesUpEveryReplica) {
  auto nodes = Nodes(4);
  nodes[0].draining = true;
  std::vector<PlacedShard> shards = {{1, {1, 2, 3}, ""}, {2, {1, 2, 3}, ""}};
  auto plan = PlanMoves(nodes, shards, Unlimited());
  ASSERT_EQ(plan.moves.size(), 2u);
  for (const auto& m : plan.moves) {
    EXPECT_EQ(m.from, 1u);
    EXPECT_EQ(m.to, 4u);
    EXPECT_EQ(m.reason, "drain");
  }
  EXPECT_TRUE(plan.unplaceable.empty());
}

TEST(PlacementTest, AGeoShardStaysInItsRegionAndIsReportedWhenItCannot) {
  std::vector<PlacementNode> nodes = {
      {1, "eu", "a"}, {2, "eu", "b"}, {3, "us", "c"}, {4, "us", "d"}};
  nodes[0].up = false;  // eu's node 1 is gone for good; eu has no spare node
  std::vector<PlacedShard> shards = {{7, {1, 2}, "eu"}};
  auto plan = PlanMoves(nodes, shards, Unlimited());
  EXPECT_TRUE(plan.moves.empty()) << "moved to " << plan.moves[0].to;
  ASSERT_EQ(plan.unplaceable.size(), 1u);
  EXPECT_EQ(plan.unplaceable[0].shard_id, 7u);
  EXPECT_EQ(plan.unplaceable[0].stuck_on, 1u);
  EXPECT_NE(plan.unplaceable[0].reason.find("region eu"), std::string::npos);
  nodes.push_back({5, "eu", "e"});  // eu gains a node: the shard is re-made there
  plan = PlanMoves(nodes, shards, Unlimited());
  ASSERT_EQ(plan.moves.size(), 1u);
  EXPECT_EQ(plan.moves[0].to, 5u);
  EXPECT_EQ(plan.moves[0].reason, "dead node");
}

TEST(PlacementTest, NoTwoReplicasInOneZoneWhenThereAreEnoughZones) {
  std::vector<PlacementNode> nodes = {
      {1, "", "a"}, {2, "", "b"}, {3, "", "c"}, {4, "", "a"}, {5, "", "c"}};
  nodes[1].draining = true;  // the only node of zone b
  std::vector<PlacedShard> shards = {{1, {1, 2, 3}, ""}};
  auto plan = PlanMoves(nodes, shards, Unlimited());
  // Zones a and c already hold replicas, and only zones a and c are left: two zones for three
  // replicas, so the zone rule cannot hold and gives way (the node rule never does).
  ASSERT_EQ(plan.moves.size(), 1u);
  EXPECT_TRUE(plan.moves[0].to == 4 || plan.moves[0].to == 5);
  nodes.push_back({6, "", "b"});
  plan = PlanMoves(nodes, shards, Unlimited());
  ASSERT_EQ(plan.moves.size(), 1u);
  EXPECT_EQ(plan.moves[0].to, 6u) << "zone b again, the only zone holding none of its replicas";
}

TEST(PlacementTest, RateLimitsBoundEachPlan) {
  auto nodes = Nodes(6);
  std::vector<PlacedShard> shards;
  for (uint64_t s = 1; s <= 12; ++s) shards.push_back({s, {1, 2, 3}, ""});
  PlacementOptions o;  // one move, each node in at most one
  auto plan = PlanMoves(nodes, shards, o);
  EXPECT_EQ(plan.moves.size(), 1u);
  o.max_moves = 10;
  plan = PlanMoves(nodes, shards, o);
  std::map<uint64_t, int> per_node;
  for (const auto& m : plan.moves) {
    ++per_node[m.from];
    ++per_node[m.to];
  }
  for (const auto& [node, n] : per_node) EXPECT_EQ(n, 1) << "node " << node;
  EXPECT_EQ(plan.moves.size(), 3u) << "three busy sources, three targets";
}

// Random clusters: nodes with a few regions and zones, some draining or down; shards on
// distinct nodes. Plans are applied until none is left.
struct RandomCluster {
  std::vector<PlacementNode> nodes;
  std::vector<PlacedShard> shards;
};

RandomCluster MakeRandom(std::mt19937_64& rng, bool constrained) {
  RandomCluster c;
  int n = 3 + static_cast<int>(rng() % 6);
  const char* regions[] = {"eu", "us"};
  for (int i = 1; i <= n; ++i) {
    PlacementNode node;
    node.id = static_cast<uint64_t>(i);
    node.region = constrained ? regions[rng() % 2] : "";
    node.zone = constrained ? "z" + std::to_string(rng() % 3) : "";
    node.draining = constrained && rng() % 6 == 0;
    node.up = !constrained || rng() % 8 != 0;
    node.load = static_cast<double>(rng() % 100);
    c.nodes.push_back(node);
  }
  int shards = 1 + static_cast<int>(rng() % 20);
  for (int s = 1; s <= shards; ++s) {
    PlacedShard shard;
    shard.id = static_cast<uint64_t>(s);
    if (constrained && rng() % 2 == 0) shard.region = regions[rng() % 2];
    std::vector<uint64_t> ids;
    for (const auto& node : c.nodes) {
      if (shard.region.empty() || node.region == shard.region) ids.push_back(node.id);
    }
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(std::min<size_t>(ids.size(), 3));
    if (ids.empty()) continue;
    shard.replicas = ids;
    c.shards.push_back(shard);
  }
  return c;
}

void Apply(std::vector<PlacedShard>& shards, const ReplicaMove& m) {
  for (auto& s : shards) {
    if (s.id == m.shard_id) std::replace(s.replicas.begin(), s.replicas.end(), m.from, m.to);
  }
}

TEST(PlacementProperties, HardConstraintsHoldAndPlansAreDeterministic) {
  std::mt19937_64 rng(42);
  int moves = 0, refusals = 0;
  for (int round = 0; round < 300; ++round) {
    RandomCluster c = MakeRandom(rng, /*constrained=*/true);
    PlacementOptions o;
    o.max_moves = 1 + static_cast<int>(rng() % 4);
    for (int step = 0; step < 500; ++step) {
      auto plan = PlanMoves(c.nodes, c.shards, o);
      // The same input, in another order, gives the same plan.
      auto shuffled = c.shards;
      std::shuffle(shuffled.begin(), shuffled.end(), rng);
      auto again = PlanMoves(c.nodes, shuffled, o);
      ASSERT_EQ(plan.moves.size(), again.moves.size());
      for (size_t i = 0; i < plan.moves.size(); ++i) {
        EXPECT_EQ(plan.moves[i].shard_id, again.moves[i].shard_id);
        EXPECT_EQ(plan.moves[i].to, again.moves[i].to);
      }
      refusals += static_cast<int>(plan.unplaceable.size());
      ASSERT_LE(static_cast<int>(plan.moves.size()), o.max_moves);
      if (plan.moves.empty()) break;
      for (const auto& m : plan.moves) {
        const PlacedShard& s =
            *std::find_if(c.shards.begin(), c.shards.end(),
                          [&](const PlacedShard& x) { return x.id == m.shard_id; });
        ASSERT_TRUE(MayPlace(c.nodes, s, m.to, m.from))
            << "round " << round << ": shard " << m.shard_id << " to node " << m.to;
        Apply(c.shards, m);
        ++moves;
      }
      ASSERT_LT(step, 499) << "round " << round << ": plans never ran out";
    }
    // Settled: a replica left on a draining or dead node is one reported as unplaceable.
    auto final_plan = PlanMoves(c.nodes, c.shards, o);
    std::set<std::pair<uint64_t, uint64_t>> reported;
    for (const auto& u : final_plan.unplaceable) reported.insert({u.shard_id, u.stuck_on});
    for (const auto& s : c.shards) {
      for (uint64_t r : s.replicas) {
        const auto& node = *std::find_if(c.nodes.begin(), c.nodes.end(),
                                         [&](const PlacementNode& n) { return n.id == r; });
        if (!node.up || node.draining) {
          EXPECT_TRUE(reported.contains({s.id, r}))
              << "round " << round << ": shard " << s.id << " left on node " << r << " silently";
        }
        if (!s.region.empty()) {
          EXPECT_EQ(node.region, s.region) << "left its region";
        }
      }
      std::set<uint64_t> distinct(s.replicas.begin(), s.replicas.end());
      EXPECT_EQ(distinct.size(), s.replicas.size()) << "two replicas on one node";
    }
  }
  EXPECT_GT(moves, 100);
  EXPECT_GT(refusals, 0) << "some random cluster had a shard with nowhere to go";
}

TEST(PlacementProperties, ConvergesToAnEvenSpreadFromAnyStart) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 300; ++round) {
    RandomCluster c = MakeRandom(rng, /*constrained=*/false);
    for (int step = 0; step < 1000; ++step) {
      auto plan = PlanMoves(c.nodes, c.shards, PlacementOptions{});
      if (plan.moves.empty()) break;
      for (const auto& m : plan.moves) Apply(c.shards, m);
    }
    std::map<uint64_t, int> counts;
    for (const auto& n : c.nodes) counts[n.id] = 0;
    for (const auto& s : c.shards) {
      for (uint64_t r : s.replicas) ++counts[r];
    }
    auto [lo, hi] =
        std::minmax_element(counts.begin(), counts.end(),
                            [](const auto& a, const auto& b) { return a.second < b.second; });
    EXPECT_LE(hi->second - lo->second, 1)
        << "round " << round << ": node " << hi->first << " holds " << hi->second << ", node "
        << lo->first << " " << lo->second;
  }
}

}  // namespace
}  // namespace kv::sharding
