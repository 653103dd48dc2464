// BreakerRegistry: the named circuit breakers of one process (e.g. "peer-2", "forward-1"),
// created on first use, listed and overridden by operators. Thread-safe. The clock and the
// jitter source are injected (tests pass fakes).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "control/circuit_breaker.h"

namespace kv::control {

struct BreakerInfo {
  std::string name;
  BreakerState state;
  BreakerOverride override_mode;
  uint64_t transitions;
};

class BreakerRegistry {
 public:
  using Clock = std::function<int64_t()>;  // microseconds
  BreakerRegistry(BreakerConfig config, Clock clock, uint64_t seed = 1);

  bool Allow(const std::string& name);
  void Record(const std::string& name, bool success, int64_t duration_us);
  std::vector<BreakerInfo> List();
  // False if no breaker has that name yet.
  bool Force(const std::string& name, BreakerOverride mode);
  int64_t now() const { return clock_(); }

 private:
  CircuitBreaker& Get(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  BreakerConfig config_;
  Clock clock_;
  absl::Mutex mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, CircuitBreaker> breakers_ ABSL_GUARDED_BY(mu_);
};

const char* OverrideName(BreakerOverride o);

}  // namespace kv::control
