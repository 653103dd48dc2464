#include "control/breaker_registry.h"

namespace kv::control {

const char* OverrideName(BreakerOverride o) {
  switch (o) {
    case BreakerOverride::kNone:
      return "none";
    case BreakerOverride::kForcedOpen:
      return "forced-open";
    case BreakerOverride::kForcedClosed:
      return "forced-closed";
  }
  return "?";
}

BreakerRegistry::BreakerRegistry(BreakerConfig config, Clock clock, uint64_t seed)
    : config_(config), clock_(std::move(clock)), rng_(seed) {}

CircuitBreaker& BreakerRegistry::Get(const std::string& name) {
  auto it = breakers_.find(name);
  if (it == breakers_.end()) it = breakers_.emplace(name, CircuitBreaker(config_)).first;
  return it->second;
}

bool BreakerRegistry::Allow(const std::string& name) {
  absl::MutexLock lock(&mu_);
  return Get(name).Allow(clock_());
}

void BreakerRegistry::Record(const std::string& name, bool success, int64_t duration_us) {
  absl::MutexLock lock(&mu_);
  double r = std::uniform_real_distribution<double>(0, 1)(rng_);
  Get(name).Record(success, duration_us, clock_(), r);
}

std::vector<BreakerInfo> BreakerRegistry::List() {
  absl::MutexLock lock(&mu_);
  std::vector<BreakerInfo> out;
  int64_t now = clock_();
  for (auto& [name, b] : breakers_) {
    out.push_back(BreakerInfo{name, b.state(now), b.override_mode(), b.transitions()});
  }
  return out;
}

bool BreakerRegistry::Force(const std::string& name, BreakerOverride mode) {
  absl::MutexLock lock(&mu_);
  auto it = breakers_.find(name);
  if (it == breakers_.end()) return false;
  it->second.Force(mode);
  return true;
}

}  // namespace kv::control
