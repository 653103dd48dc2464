// A DriverClock the test moves by hand: wall time and monotonic time advance together.
#pragma once

#include "server/driver_clock.h"

namespace kv::server {

class SimClock final : public DriverClock {
 public:
  absl::Time Now() const override { return absl::FromUnixSeconds(2'000'000'000) + elapsed; }
  absl::Duration Monotonic() const override { return elapsed; }
  absl::Duration elapsed;
};

}  // namespace kv::server
