// Runs the deterministic simulation over many seeds. KV_SIM_SEEDS sets how many (CI: 500;
// soak: thousands); KV_SIM_SEED replays one. A failure prints the command that replays it.
#include "tests/raft/simulation.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace kv::raft::sim {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

void RunSeeds(const char* test, SimOptions base, int default_seeds) {
  int seeds = EnvInt("KV_SIM_SEEDS", default_seeds);
  int first = EnvInt("KV_SIM_SEED", 0);
  if (first != 0) seeds = 1;
  int elections = 0, snapshots = 0, ops = 0, quiesces = 0, joints = 0, joint_commits = 0;
  uint64_t committed = 0;
  for (int i = 0; i < seeds; ++i) {
    SimOptions o = base;
    o.seed = first != 0 ? static_cast<uint64_t>(first) : static_cast<uint64_t>(i + 1);
    SimResult r = RunSimulation(o);
    ASSERT_TRUE(r.ok) << r.failure << "\nreplay: KV_SIM_SEED=" << o.seed
                      << " build/tests/raft_simulation_test --gtest_filter=*" << test;
    elections += r.elections;
    snapshots += r.snapshots_installed;
    ops += r.client_ops;
    committed += r.committed;
    quiesces += r.quiesces;
    joints += r.joint_changes;
    joint_commits += r.joint_commits_checked;
  }
  // The faults must not make the runs vacuous: things happened.
  EXPECT_GT(committed, static_cast<uint64_t>(seeds) * 5);
  EXPECT_GT(elections, seeds);
  EXPECT_GT(ops, seeds * 10);
  std::printf(
      "%d seeds: %lu entries committed, %d elections, %d snapshots installed, %d client ops\n",
      seeds, static_cast<unsigned long>(committed), elections, snapshots, ops);
  if (std::string(test) == "Snapshots") {
    EXPECT_GT(snapshots, 0);
  }
  if (base.membership > 0 && base.pool > 3) {
    std::printf("%d joint membership changes, %d commits in a joint configuration checked\n",
                joints, joint_commits);
    EXPECT_GT(joints, 0);
    EXPECT_GT(joint_commits, 0) << "no commit was ever checked against both voter sets";
  }
  if (base.quiesce) {
    std::printf("%d times a leader went quiet\n", quiesces);
    EXPECT_GT(quiesces, seeds);
  }
}

TEST(RaftSimulation, ThreeNodesWithFaults) {
  SimOptions o;
  o.pool = 3;
  RunSeeds("ThreeNodesWithFaults", o, 200);
}

TEST(RaftSimulation, MembershipChangesAcrossFiveNodes) {
  SimOptions o;
  o.pool = 5;
  o.membership = 0.01;
  RunSeeds("MembershipChangesAcrossFiveNodes", o, 150);
}

TEST(RaftSimulation, HeavyLossAndPartitions) {
  SimOptions o;
  o.pool = 5;
  o.initial_voters = 5;
  o.drop = 0.2;
  o.duplicate = 0.1;
  o.partition = 0.01;
  o.crash = 0.004;
  RunSeeds("HeavyLossAndPartitions", o, 100);
}

TEST(RaftSimulation, Snapshots) {
  SimOptions o;
  o.pool = 3;
  o.crash = 0.005;
  o.steps = 5000;
  RunSeeds("Snapshots", o, 60);
}

// Idle groups go quiet and wake on work, on votes, and when a member's node liveness lapses;
// elections, check-quorum, the lease and ReadIndex must stay safe across it.
TEST(RaftSimulation, QuiescenceWithFaults) {
  SimOptions o;
  o.pool = 3;
  o.quiesce = true;
  o.steps = 6000;
  RunSeeds("QuiescenceWithFaults", o, 100);
}

TEST(RaftSimulation, QuiescenceWithMembershipAndLoss) {
  SimOptions o;
  o.pool = 5;
  o.quiesce = true;
  o.membership = 0.006;
  o.drop = 0.15;
  o.partition = 0.008;
  o.steps = 6000;
  RunSeeds("QuiescenceWithMembershipAndLoss", o, 60);
}

}  // namespace
}  // namespace kv::raft::sim
