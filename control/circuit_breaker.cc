#include "control/circuit_breaker.h"

namespace kv::control {

const char* BreakerStateName(BreakerState s) {
  switch (s) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half-open";
  }
  return "?";
}

BreakerState CircuitBreaker::state(int64_t now_us) {
  if (state_ == BreakerState::kOpen && now_us >= open_until_us_) {
    state_ = BreakerState::kHalfOpen;
    probes_admitted_ = 0;
    probes_succeeded_ = 0;
    ++transitions_;
  }
  return state_;
}

bool CircuitBreaker::Allow(int64_t now_us) {
  if (override_ == BreakerOverride::kForcedOpen) return false;
  if (override_ == BreakerOverride::kForcedClosed) return true;
  switch (state(now_us)) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      return false;
    case BreakerState::kHalfOpen:
      if (probes_admitted_ >= config_.half_open_probes) return false;
      ++probes_admitted_;
      return true;
  }
  return true;
}

void CircuitBreaker::Record(bool success, int64_t duration_us, int64_t now_us, double random01) {
  if (override_ != BreakerOverride::kNone) return;
  BreakerState s = state(now_us);
  if (s == BreakerState::kHalfOpen) {
    if (!success) {
      Open(now_us, random01);
    } else if (++probes_succeeded_ >= config_.half_open_probes) {
      Close();
    }
    return;
  }
  if (s == BreakerState::kOpen) return;  // a call admitted before it opened
  window_.push_back(Outcome{!success, duration_us >= config_.slow_call_us});
  while (static_cast<int>(window_.size()) > config_.window) window_.pop_front();
  if (static_cast<int>(window_.size()) < config_.min_calls) return;
  int failed = 0, slow = 0;
  for (const auto& o : window_) {
    failed += o.failed;
    slow += o.slow;
  }
  double n = static_cast<double>(window_.size());
  if (failed / n >= config_.failure_rate || slow / n >= config_.slow_rate) Open(now_us, random01);
}

void CircuitBreaker::Open(int64_t now_us, double random01) {
  state_ = BreakerState::kOpen;
  open_until_us_ = now_us + static_cast<int64_t>(static_cast<double>(config_.open_timeout_us) *
                                                 (1.0 + config_.jitter * random01));
  window_.clear();
  ++transitions_;
}

void CircuitBreaker::Close() {
  state_ = BreakerState::kClosed;
  window_.clear();
  ++transitions_;
}

}  // namespace kv::control
