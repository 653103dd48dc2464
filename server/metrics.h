// Metrics: Prometheus exposition on the metrics listener (prometheus-cpp pull exposer). RPCs
// are counted on the request path; everything else (Raft, RocksDB, breakers, limits, kill
// switch, process) is sampled once a second by Refresh(). Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "control/breaker_registry.h"
#include "server/control_state.h"
#include "server/raft_driver.h"
#include "storage/engine.h"

namespace prometheus {
class Counter;
class Histogram;
}  // namespace prometheus

namespace kv::server {

class Metrics {
 public:
  // Starts serving /metrics on `listen` (host:port). Fails if it cannot bind.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& listen);
  ~Metrics();

  void ObserveRpc(const char* method, absl::StatusCode code, double seconds);
  // A request refused before it was admitted (invalid, unauthenticated, over a limit, the kill
  // switch): counted with its code in kv_requests_total, kept out of the latency histogram.
  void CountRefused(const char* method, absl::StatusCode code);
  // The health report's status (kv_health{status}: 1 for the current one).
  void SetHealth(const std::string& status);
  // Space on the data directory's file system (kv_disk_bytes{stat=free|total}).
  void SetDiskSpace(double free_bytes, double total_bytes);
  // Per keyspace (by name): its shards with a replica here and those this node leads
  // (kv_keyspace_shards{keyspace,kind=hosted|led}); keyspaces not named lose their series.
  struct KeyspaceShardCount {
    double hosted = 0, led = 0;
  };
  void SetKeyspaceShards(const std::map<std::string, KeyspaceShardCount>& counts);
  // The rebalancer as this node sees it: kv_placement{kind=moves_pending|unplaceable_shards|
  // nodes_down|paused} (cluster-wide, from this node's metadata) and
  // kv_rebalance_actions_total{kind=move|leader_transfer} (carried out by this node).
  struct PlacementCounts {
    double moves_pending = 0, unplaceable_shards = 0, nodes_down = 0, paused = 0;
    uint64_t moves_done = 0, leader_transfers = 0;
  };
  void SetPlacement(const PlacementCounts& counts);
  // kv_shard_merges_total{outcome=merged|aborted|thawed}: merges this node carried out, and
  // merges it settled that did not happen (the abort recorded; the absorbed shard thawed).
  void SetMerges(const struct MergeCounters& counts);
  // One synced Raft log write (append + fsync) and one apply batch.
  void ObserveLogAppend(double seconds);
  void ObserveApply(double seconds);
  // `raft`: the default data group; `driver`: node-wide counts over every group.
  void Refresh(const GroupStatus& raft, const DriverCounters& driver, const ControlState& control,
               control::BreakerRegistry& breakers, const storage::Engine& engine,
               const struct SplitCounters& splits);

 private:
  struct Impl;
  explicit Metrics(std::unique_ptr<Impl> impl);
  // The series of one method and code, made on first use and remembered.
  std::pair<prometheus::Counter*, prometheus::Histogram*> RpcSeriesFor(const char* method,
                                                                       absl::StatusCode code);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kv::server
