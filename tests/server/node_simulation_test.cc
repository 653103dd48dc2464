// Runs the whole-node simulation over many seeds. KV_NODE_SIM_SEEDS sets how many (CI: 500
// across the tests below; soak: more); KV_NODE_SIM_SEED replays one. A failure prints the
// command that replays it.
#include "tests/server/node_simulation.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace kv::server::sim {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

void RunSeeds(const char* test, NodeSimOptions base, int default_seeds) {
  int seeds = EnvInt("KV_NODE_SIM_SEEDS", default_seeds);
  int first = EnvInt("KV_NODE_SIM_SEED", 0);
  if (first != 0) seeds = 1;
  NodeSimResult total;
  for (int i = 0; i < seeds; ++i) {
    NodeSimOptions o = base;
    o.seed = first != 0 ? static_cast<uint64_t>(first) : static_cast<uint64_t>(i + 1);
    NodeSimResult r = RunNodeSimulation(o);
    ASSERT_TRUE(r.ok) << r.failure << "\nreplay: KV_NODE_SIM_SEED=" << o.seed
                      << " build/bin/node_simulation_test --gtest_filter=*" << test;
    total.client_ops += r.client_ops;
    total.acknowledged_writes += r.acknowledged_writes;
    total.crashes += r.crashes;
    total.mid_batch_crashes += r.mid_batch_crashes;
    total.crashes_between_writes += r.crashes_between_writes;
    total.log_segments_deleted += r.log_segments_deleted;
    total.crashes_that_lost_writes += r.crashes_that_lost_writes;
    total.snapshots_received += r.snapshots_received;
    total.forwards_served += r.forwards_served;
    total.splits += r.splits;
    total.stale_routes += r.stale_routes;
    total.redirects += r.redirects;
    total.retried_writes_acknowledged += r.retried_writes_acknowledged;
    total.retries_answered_by_another_shard += r.retries_answered_by_another_shard;
    total.groups_created += r.groups_created;
    total.groups_destroyed += r.groups_destroyed;
    total.quiet_group_observations += r.quiet_group_observations;
    total.learners_added += r.learners_added;
    total.joint_changes += r.joint_changes;
    total.replicas_removed += r.replicas_removed;
    total.drained_replicas += r.drained_replicas;
    total.dead_node_moves += r.dead_node_moves;
    total.merges_started += r.merges_started;
    total.merges += r.merges;
    total.merges_settled += r.merges_settled;
    total.delegated_snapshots_received += r.delegated_snapshots_received;
  }
  std::printf(
      "%d seeds: %d client ops, %d acknowledged writes, %d crashes (%d mid-batch, %d between a "
      "snapshot's two writes, %d lost unsynced writes), %d raft log segments deleted, %d snapshots "
      "received (%d from a delegate), %d forwarded writes, %d "
      "splits, %d requests on "
      "stale routes, %d redirects, %d writes acknowledged on a retry (%d by another shard), %d "
      "groups created, %d "
      "destroyed, %d quiet (node, group) samples\n",
      seeds, total.client_ops, total.acknowledged_writes, total.crashes, total.mid_batch_crashes,
      total.crashes_between_writes, total.crashes_that_lost_writes, total.log_segments_deleted,
      total.snapshots_received, total.delegated_snapshots_received, total.forwards_served,
      total.splits, total.stale_routes, total.redirects, total.retried_writes_acknowledged,
      total.retries_answered_by_another_shard, total.groups_created, total.groups_destroyed,
      total.quiet_group_observations);
  if (base.move > 0) {
    std::printf(
        "moves: %d learners added, %d joint changes (%d replacing a dead node), %d replicas "
        "removed from a node (%d from a drained one)\n",
        total.learners_added, total.joint_changes, total.dead_node_moves, total.replicas_removed,
        total.drained_replicas);
    if (base.dead_after_ms > 0) {
      EXPECT_GT(total.dead_node_moves, seeds / 4);
    }
    if (base.drain) {
      EXPECT_GT(total.drained_replicas, seeds / 2);
    }
    EXPECT_GT(total.joint_changes, seeds) << "the runs must move replicas";
    EXPECT_GT(total.replicas_removed, seeds / 2);
    EXPECT_GT(total.delegated_snapshots_received, 0)
        << "moves must catch learners up from other replicas than the leader";
  }
  if (base.merge > 0) {
    std::printf("merges: %d freezes, %d merged, %d aborted and thawed\n", total.merges_started,
                total.merges, total.merges_settled);
    EXPECT_GT(total.merges, seeds / 2) << "the runs must merge shards";
    if (seeds >= 20) {
      EXPECT_GT(total.merges_settled, 0) << "and settle merges that did not happen";
    }
  }
  // The faults must not make the runs vacuous.
  EXPECT_GT(total.acknowledged_writes, seeds * 5);
  EXPECT_GT(total.groups_created, seeds / 2);
  EXPECT_GT(total.quiet_group_observations, seeds);
  if (seeds >= 20) {
    EXPECT_GT(total.crashes, seeds / 2);
    EXPECT_GT(total.mid_batch_crashes, 0);
    if (seeds >= 100) {
      EXPECT_GT(total.crashes_between_writes, 0);
      EXPECT_GT(total.log_segments_deleted, 0);
    }
    EXPECT_GT(total.crashes_that_lost_writes, 0);
    EXPECT_GT(total.snapshots_received, 0);
    EXPECT_GT(total.forwards_served, seeds);
    EXPECT_GT(total.splits, seeds / 10);
    EXPECT_GT(total.stale_routes, 0) << "clients' caches went stale across splits";
    EXPECT_GT(total.retried_writes_acknowledged, 0);
    EXPECT_GT(total.groups_destroyed, 0);
  }
}

TEST(NodeSimulation, ThreeNodesWithFaultsAndGroupChurn) {
  RunSeeds("ThreeNodesWithFaultsAndGroupChurn", NodeSimOptions{}, 400);
}

TEST(NodeSimulation, HeavyLossAndPartitions) {
  RunSeeds("HeavyLossAndPartitions", {.drop = 0.2, .crash = 0.003, .partition = 0.006}, 100);
}

// Splits often, while answers are often lost: writes applied by a parent just before it split
// are retried at the child, which must answer them from the exactly-once records it inherited.
TEST(NodeSimulation, FrequentSplitsWhileAnswersAreLost) {
  RunSeeds("FrequentSplitsWhileAnswersAreLost", {.drop = 0.15, .crash = 0.0005, .split = 0.01}, 60);
}

// Groups of three replicas on four nodes move (learner, catch-up, one joint change) while they
// split, crash, lose messages and are partitioned; nodes follow the newest descriptors.
TEST(NodeSimulation, ReplicasMoveAmongFourNodesWithFaultsAndSplits) {
  RunSeeds("ReplicasMoveAmongFourNodesWithFaultsAndSplits",
           {.nodes = 4, .split = 0.003, .replicas = 3, .move = 0.02}, 30);
}

// As above, with one node drained from the start: placement's moves take every replica off it,
// beside random moves, through the faults; after healing it holds nothing.
TEST(NodeSimulation, ADrainUnderFaultsEmptiesItsNode) {
  RunSeeds("ADrainUnderFaultsEmptiesItsNode",
           {.nodes = 4, .split = 0.003, .replicas = 3, .move = 0.02, .drain = true}, 30);
}

// As above, with more crashes: a node down for 150 ms counts as dead, and placement re-creates
// its replicas on the others while it is away; it comes back to a cluster that moved on.
TEST(NodeSimulation, ADeadNodesReplicasAreRecreatedUnderFaults) {
  RunSeeds("ADeadNodesReplicasAreRecreatedUnderFaults",
           {.nodes = 4,
            .crash = 0.003,
            .split = 0.003,
            .replicas = 3,
            .move = 0.02,
            .dead_after_ms = 150},
           30);
}

// Adjacent range shards merge (freeze, padding, merge; or abort and thaw) while shards split,
// nodes crash (some in the middle of a merge), messages are lost and clients retry.
TEST(NodeSimulation, MergesAndSplitsUnderFaults) {
  RunSeeds("MergesAndSplitsUnderFaults", {.split = 0.006, .merge = 0.01}, 60);
}

}  // namespace
}  // namespace kv::server::sim
