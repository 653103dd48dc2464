// CircuitBreaker: closed / open / half-open around calls to one destination.
//
// Closed: calls flow; outcomes enter a sliding window of the last `window` calls. Once it holds
// at least `min_calls`, a failure rate or slow-call rate at or over its threshold opens the
// breaker. Open: calls are refused for `open_timeout`, lengthened by a random jitter (so breakers
// across a cluster do not close in lock-step). Half-open: up to `half_open_probes` calls go
// through; all succeeding closes it, any failing reopens it. An operator can force it open or
// closed until released. Time and randomness are passed in; not thread-safe (callers lock).
#pragma once

#include <cstdint>
#include <deque>
#include <string>

namespace kv::control {

enum class BreakerState { kClosed, kOpen, kHalfOpen };
enum class BreakerOverride { kNone, kForcedOpen, kForcedClosed };
const char* BreakerStateName(BreakerState s);

struct BreakerConfig {
  int window = 20;
  int min_calls = 10;
  double failure_rate = 0.5;
  double slow_rate = 0.8;
  int64_t slow_call_us = 1'000'000;
  int64_t open_timeout_us = 2'000'000;
  double jitter = 0.25;  // open timeout x [1, 1 + jitter)
  int half_open_probes = 3;
};

class CircuitBreaker {
 public:
  explicit CircuitBreaker(BreakerConfig config = {}) : config_(config) {}

  // May a call go now? In half-open, admitting counts as taking a probe slot.
  // `random01` is a uniform draw in [0, 1) used for the jitter when the breaker opens.
  bool Allow(int64_t now_us);
  void Record(bool success, int64_t duration_us, int64_t now_us, double random01);

  BreakerState state(int64_t now_us);
  BreakerOverride override_mode() const { return override_; }
  void Force(BreakerOverride mode) { override_ = mode; }
  uint64_t transitions() const { return transitions_; }
  int64_t open_until_us() const { return open_until_us_; }

 private:
  struct Outcome {
    bool failed;
    bool slow;
  };
  void Open(int64_t now_us, double random01);
  void Close();

  BreakerConfig config_;
  BreakerState state_ = BreakerState::kClosed;
  BreakerOverride override_ = BreakerOverride::kNone;
  std::deque<Outcome> window_;
  int64_t open_until_us_ = 0;
  int probes_admitted_ = 0;
  int probes_succeeded_ = 0;
  uint64_t transitions_ = 0;
};

}  // namespace kv::control
