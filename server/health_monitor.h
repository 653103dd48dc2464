// HealthMonitor: evaluates this node's health twice a second and publishes it: to the standard
// grpc.health.v1 service (""= liveness, "kv" = readiness: has a leader and is caught up, "raft"
// = the Raft group has a leader), to the detailed report (kvctl health), and to metrics. Flags
// gray failure (slow fsync or apply, apply lag, silent leader, low disk) as DEGRADED before the
// node is dead; a degraded leader hands leadership to a healthy peer (once per cool-down).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "kvstore/v1/control.pb.h"
#include "server/control_state.h"
#include "server/health_thresholds.h"
#include "server/raft_driver.h"

namespace grpc {
class HealthCheckServiceInterface;
}

namespace kv::server {

class HealthMonitor {
 public:
  HealthMonitor(RaftDriver* driver, uint64_t group_id, ControlState* control, std::string data_dir,
                HealthThresholds thresholds);
  ~HealthMonitor();

  void Start(grpc::HealthCheckServiceInterface* health);
  void Stop();
  v1::HealthReport Report() const;
  // DEGRADED for the last four checks (about two seconds): a gray failure, not a blip.
  bool SustainedDegraded() const { return degraded_checks_.load() >= 4; }
  // Cluster-wide warnings added to every report (shards that cannot be placed, nodes down);
  // they do not make this node DEGRADED. Set before Start.
  void SetClusterWarnings(std::function<std::vector<std::string>()> warnings) {
    cluster_warnings_ = std::move(warnings);
  }
  // Evaluates now (also used by tests of the thresholds).
  v1::HealthReport Evaluate() const;

 private:
  void Run();

  RaftDriver* const driver_;
  const uint64_t group_id_;
  ControlState* const control_;
  const std::string data_dir_;
  const HealthThresholds thresholds_;
  grpc::HealthCheckServiceInterface* health_ = nullptr;
  mutable absl::Mutex mu_;
  v1::HealthReport last_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
  int64_t last_transfer_ms_ = 0;
  std::function<std::vector<std::string>()> cluster_warnings_;
  std::atomic<int> degraded_checks_{0};
};

}  // namespace kv::server
