// A deterministic simulation of whole kvstore nodes in one process: each node is the real
// RaftDriver with its Store, replicas, KvStateMachine and a real RocksDB directory, driven one
// iteration at a time on a simulated clock (DriverClock) instead of its thread; a simulated
// network (MessageSink) drops, delays, reorders and partitions messages and liveness beats;
// nodes crash (losing everything in memory, including writes and reads in flight, and every byte
// written to a file and not synced: RocksDB runs on a CrashableFileSystem; some crashes fall in the
// middle of an iteration, before its batch is written or after it is durable but before
// anything is sent or answered) and restart from their directory; groups are created and destroyed
// on every node while clients write and read; idle groups go quiet. One seed, one run.
//
// Keyspaces of all three strategies (range, hash with slot spans, geo with a region per shard)
// are created, split online at random keys (a hash keyspace's at slot boundaries) and dropped.
// Clients keep routing caches that go stale across splits (corrected only when a replica refuses
// a key or holds none) and retry writes with the same request id after a refusal or an unknown
// outcome. Client writes go through RaftReplica, as the KV service's do: a follower forwards them
// over the simulated network to its leader, which serves them with ServeForwardedWrite
// (RaftService's logic); the answer can be lost on the way back.
//
// With `replicas` below `nodes`, groups live on some nodes only and move between them (learner,
// catch-up by snapshot, one joint change) while all of the above goes on; every node follows
// the newest descriptor any replica applied, as kvd's nodes follow the metadata.
//
// Checked: per-key linearizability of every client history (puts, linearizable and lease
// reads); no value applied twice (a retry is deduplicated, across splits too); versions per key
// only grow; each node's replicas of a keyspace own disjoint spans at every step, their
// generations only grow, and after healing they cover the keyspace; every replica of a group
// converges to the same data once the faults stop; every group elects and serves afterwards
// (quiet groups wake).
#pragma once

#include <cstdint>
#include <string>

namespace kv::server::sim {

struct NodeSimOptions {
  uint64_t seed = 1;
  int nodes = 3;
  int steps = 3000;  // simulated milliseconds of faults and load
  double drop = 0.05;
  double crash = 0.0015;       // per step
  double partition = 0.002;    // per step: cut a node off, or heal
  double group_churn = 0.003;  // per step: create a group, or destroy one
  double split = 0.002;        // per step: split a created group (a keyspace shard) at a key
  bool quiesce = true;
  // Replicas of each created group (0: every node); with fewer than `nodes`, groups also move:
  // per step, a step of a replica move on a random group (a learner added on a node outside it,
  // then one joint change that makes it a voter and removes another voter).
  int replicas = 0;
  double move = 0;
  // With moves: one node, picked at random, is drained from the start. Placement
  // (sharding/placement.h) plans the moves off it, carried out as above beside the random ones
  // (which never target it); after healing it must end up holding no replica of any group.
  bool drain = false;
  // With moves: a node down this long (simulated ms) counts as dead to placement, which
  // re-creates its replicas on the other nodes (kvd's --dead-node-timeout); 0: never.
  int dead_after_ms = 0;
  // Per step: start a merge of two adjacent range shards (ShardMerger's protocol: a freeze
  // with WRITE_ALL, the survivor padded past it, the merge, or an abort and a thaw), one at a
  // time, from a random node. Freezes left behind (a crash, lost answers) are settled as a
  // leader's Tick does. Only without moves (merges need equal voter sets).
  double merge = 0;
};

struct NodeSimResult {
  bool ok = true;
  std::string failure;
  int client_ops = 0;
  int acknowledged_writes = 0;
  int crashes = 0;
  int mid_batch_crashes = 0;         // of those, in the middle of a driver iteration
  int crashes_between_writes = 0;    // of those, between a snapshot's RocksDB and log writes
  int log_segments_deleted = 0;      // Raft log segments found dead and deleted
  int crashes_that_lost_writes = 0;  // of those, crashes that cut unsynced data off a file
  int snapshots_received = 0;        // streamed into files by a SnapshotSink and handed to a driver
  int delegated_snapshots_received = 0;  // of those, streamed by a replica for its leader
  int forwards_served = 0;               // writes a follower's RaftReplica forwarded to its leader
  int splits = 0;                        // splits that applied (a child group exists on some node)
  int stale_routes = 0;  // client requests a replica refused: a split had moved the key
  int redirects = 0;     // client requests sent where no replica was: the client learned
  int retried_writes_acknowledged = 0;  // writes acknowledged on a second or third attempt
  // of those, after an unknown outcome at one shard, by another (a split child)
  int retries_answered_by_another_shard = 0;
  int groups_created = 0;
  int groups_destroyed = 0;
  int quiet_group_observations = 0;  // (node, group) pairs seen quiet at a sample
  int learners_added = 0;            // moves' first steps that took effect
  int joint_changes = 0;             // moves' joint changes that took effect
  int replicas_removed = 0;          // replicas destroyed because a move took them off a node
  int drained_replicas = 0;          // of those, off the drained node
  int dead_node_moves = 0;           // joint changes placement proposed to replace a dead node
  int merges_started = 0;            // freezes that applied
  int merges = 0;                    // merges that applied (an absorbed group is retired)
  int merges_settled = 0;            // freezes undone: the abort recorded, then the thaw
};

NodeSimResult RunNodeSimulation(const NodeSimOptions& options);

}  // namespace kv::server::sim
