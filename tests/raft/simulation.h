// A deterministic simulation of a Raft cluster in one process: nodes are raft::Raft cores with
// simulated durable storage and a key-value state machine; the network drops, delays,
// duplicates, reorders and partitions messages; nodes crash (losing the Ready they were
// persisting) and restart from what they had made durable; members are added, promoted and
// removed. Every random choice comes from one seed, so a seed replays a run exactly.
//
// After every step the simulation checks election safety, log matching, leader completeness and
// state machine safety; client puts and gets (ReadIndex and lease) form a history that is checked
// for linearizability at the end.
#pragma once

#include <cstdint>
#include <string>

namespace kv::raft::sim {

struct SimOptions {
  uint64_t seed = 1;
  int initial_voters = 3;
  int pool = 5;  // node ids 1..pool; the rest join through membership changes
  int steps = 3000;
  double drop = 0.05;
  double duplicate = 0.02;
  double crash = 0.002;       // per step
  double partition = 0.003;   // per step: cut a random node off (or heal)
  double membership = 0.004;  // per step, when there is a leader
  bool lease_reads = true;
  // Idle groups quiesce (Raft::Quiesce), with node liveness beats over the same faulty network
  // waking them; client load comes in bursts with quiet gaps so that they do.
  bool quiesce = false;
};

struct SimResult {
  bool ok = true;
  std::string failure;  // the violated property and where
  uint64_t committed = 0;
  int elections = 0;
  int snapshots_installed = 0;
  int client_ops = 0;
  int quiesces = 0;               // times a leader went quiet
  int joint_changes = 0;          // joint membership changes proposed
  int joint_commits_checked = 0;  // commits made in a joint configuration, checked on both sets
};

SimResult RunSimulation(const SimOptions& options);

}  // namespace kv::raft::sim
