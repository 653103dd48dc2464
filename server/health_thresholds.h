// Thresholds past which a node reports itself DEGRADED (gray failure), set by kvd flags.
#pragma once

#include <cstdint>

namespace kv::server {

struct HealthThresholds {
  double fsync_p99_ms = 200;
  double apply_p99_ms = 200;
  uint64_t apply_lag = 10000;
  double heartbeat_age_ms = 3000;
  uint64_t disk_free_bytes = 256ull << 20;
  bool transfer_leadership_when_degraded = true;
};

}  // namespace kv::server
