// DriverClock: where the driver and its replicas read time. The real one reads the system's
// clocks; the node simulation (tests/server/node_simulation.cc) drives a simulated one.
#pragma once

#include "absl/time/time.h"

namespace kv::server {

class DriverClock {
 public:
  virtual ~DriverClock() = default;
  // Wall-clock time: request deadlines, bounded staleness.
  virtual absl::Time Now() const = 0;
  // Monotonic time since an arbitrary start; never jumps (the cluster clock of a leadership).
  virtual absl::Duration Monotonic() const = 0;
  static const DriverClock& Real();
};

}  // namespace kv::server
