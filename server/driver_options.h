// DriverOptions: how the node's Raft driver runs its groups (timing, compaction, quiescence).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/time/time.h"
#include "server/driver_clock.h"
#include "server/snapshot_delegation.h"

namespace kv::server {

struct DriverOptions {
  uint64_t node_id = 0;
  bool sync = true;
  absl::Duration tick = absl::Milliseconds(100);
  int election_tick = 10;
  int heartbeat_tick = 1;
  int lease_margin_ticks = 2;
  // Voters of the node's first groups (bootstrap); empty with `join` (wait to be added).
  std::map<uint64_t, std::string> initial_voters;
  bool join = false;
  // Compact the log when this many applied entries sit behind it, keeping `retain` of them for
  // followers that lag a little (the rest catch up by snapshot).
  uint64_t compact_threshold = 20000;
  uint64_t compact_retain = 5000;
  // ... or when the applied entries behind the log's start hold this many payload bytes (then
  // everything applied goes: a few large entries must not pin gigabytes).
  uint64_t compact_bytes = 64ull << 20;
  // Bound on a leader's uncommitted tail per group (raft::Config::max_uncommitted_bytes), so a
  // group's log in memory is bounded by compact_bytes + max_uncommitted_bytes + one entry.
  uint64_t max_uncommitted_bytes = 64ull << 20;
  // This node's addresses: where clients reach it (told to peers with every batch) and where
  // peers do (its membership address when --force-new-cluster rewrites the membership).
  std::string client_address;
  std::string peer_address;
  // Make this node the only voter of every group (see CONF_FORCE_NEW_CLUSTER).
  bool force_new_cluster = false;
  // When set, the leader of this group hands that group's leadership to the leader of
  // `colocate_with` (keeps the metadata group led where the data group is).
  uint64_t colocate_group = UINT64_MAX;
  uint64_t colocate_with = UINT64_MAX;
  // Quiescence: a led group with no work for this many ticks goes quiet (raft.h: Quiesce);
  // 0 turns quiescence off. Node liveness beats go to every peer node once per `beat_ticks`;
  // a peer not heard from for an election timeout has lapsed, which wakes its quiet groups.
  int quiesce_after_ticks = 20;
  int beat_ticks = 2;
  // Delegated snapshots (snapshot_delegation.h): a leader asks a caught-up replica closer to the
  // receiver to stream a snapshot, and sends the next one itself when the delegate
  // has not reported within the timeout. `locality_of` names a node's region and zone (nullptr:
  // every node alike).
  bool delegate_snapshots = true;
  absl::Duration delegated_snapshot_timeout = absl::Seconds(30);
  std::function<NodeLocality(uint64_t)> locality_of;
  // Time (nullptr: the real clocks) and the seed of every group's Raft (0: random).
  const DriverClock* clock = nullptr;
  uint64_t seed = 0;
  // Simulation only: asked before and after each iteration's batch is written; returning true
  // stops the driver there, as a crash would (the batch is lost, or it is durable but nothing
  // was sent, applied or answered). nullptr in kvd.
  // kBetweenWrites: after a snapshot's data and meta reached RocksDB, before the log write.
  enum class CrashPoint { kBeforeWrite, kBetweenWrites, kAfterWrite };
  std::function<bool(CrashPoint)> crash_here;
  // Observers (metrics): duration of each synced log write (entries + hard state of every group,
  // the "append") and of each apply batch, in seconds. Called on the driver thread.
  std::function<void(double)> on_log_append;
  std::function<void(double)> on_apply;
};

}  // namespace kv::server
