// Pure control logic with injected time: token buckets and circuit breakers.
#include <gtest/gtest.h>

#include "control/circuit_breaker.h"
#include "control/token_bucket.h"

namespace kv::control {
namespace {

constexpr int64_t kSec = 1'000'000;

TEST(TokenBucketTest, BurstThenSteadyRate) {
  TokenBucket b(10, 5, 0);
  int taken = 0;
  for (int i = 0; i < 100; ++i) taken += b.TryTake(0);
  EXPECT_EQ(taken, 5);  // the burst
  int64_t retry = 0;
  EXPECT_FALSE(b.TryTake(0, &retry));
  EXPECT_NEAR(static_cast<double>(retry), 100'000, 1);  // one token per 100 ms
  // Over 10 s at 10/s, exactly ~100 more.
  taken = 0;
  for (int64_t t = 0; t <= 10 * kSec; t += 1000) taken += b.TryTake(t);
  EXPECT_NEAR(taken, 100, 1);
}

TEST(TokenBucketTest, ReconfigureCapsTokens) {
  TokenBucket b(100, 100, 0);
  b.Reconfigure(1, 2, 0);
  EXPECT_LE(b.tokens(0), 2.0);
  EXPECT_TRUE(b.TryTake(0));
  EXPECT_TRUE(b.TryTake(0));
  EXPECT_FALSE(b.TryTake(0));
}

BreakerConfig Small() {
  BreakerConfig c;
  c.window = 10;
  c.min_calls = 4;
  c.failure_rate = 0.5;
  c.slow_call_us = 100'000;
  c.slow_rate = 0.75;
  c.open_timeout_us = kSec;
  c.jitter = 0.5;
  c.half_open_probes = 2;
  return c;
}

TEST(CircuitBreakerTest, StaysClosedBelowMinimumCalls) {
  CircuitBreaker b(Small());
  for (int i = 0; i < 3; ++i) b.Record(false, 10, 0, 0);
  EXPECT_EQ(b.state(0), BreakerState::kClosed);
}

TEST(CircuitBreakerTest, OpensOnFailureRateAndRefusesCalls) {
  CircuitBreaker b(Small());
  b.Record(true, 10, 0, 0);
  b.Record(true, 10, 0, 0);
  b.Record(false, 10, 0, 0);
  EXPECT_EQ(b.state(0), BreakerState::kClosed);  // 1/3, and below min_calls
  b.Record(false, 10, 0, 0.0);                   // 2/4 = 50%
  EXPECT_EQ(b.state(0), BreakerState::kOpen);
  EXPECT_FALSE(b.Allow(kSec / 2));
}

TEST(CircuitBreakerTest, OpensOnSlowCalls) {
  CircuitBreaker b(Small());
  for (int i = 0; i < 4; ++i) b.Record(true, 200'000, 0, 0);
  EXPECT_EQ(b.state(0), BreakerState::kOpen);
}

TEST(CircuitBreakerTest, OpenTimeoutHasJitter) {
  CircuitBreaker a(Small()), b(Small());
  for (int i = 0; i < 4; ++i) {
    a.Record(false, 1, 0, 0.0);
    b.Record(false, 1, 0, 0.9);
  }
  EXPECT_EQ(a.open_until_us(), kSec);
  EXPECT_EQ(b.open_until_us(), kSec + kSec * 45 / 100);
  EXPECT_EQ(a.state(kSec), BreakerState::kHalfOpen);
  EXPECT_EQ(b.state(kSec), BreakerState::kOpen);  // still waiting: they do not close together
}

TEST(CircuitBreakerTest, HalfOpenAdmitsBoundedProbesThenCloses) {
  CircuitBreaker b(Small());
  for (int i = 0; i < 4; ++i) b.Record(false, 1, 0, 0);
  int64_t t = 2 * kSec;
  EXPECT_TRUE(b.Allow(t));
  EXPECT_TRUE(b.Allow(t));
  EXPECT_FALSE(b.Allow(t)) << "only two probes in half-open";
  b.Record(true, 1, t, 0);
  b.Record(true, 1, t, 0);
  EXPECT_EQ(b.state(t), BreakerState::kClosed);
  EXPECT_TRUE(b.Allow(t));
}

TEST(CircuitBreakerTest, FailedProbeReopens) {
  CircuitBreaker b(Small());
  for (int i = 0; i < 4; ++i) b.Record(false, 1, 0, 0);
  int64_t t = 2 * kSec;
  ASSERT_TRUE(b.Allow(t));
  b.Record(false, 1, t, 0);
  EXPECT_EQ(b.state(t), BreakerState::kOpen);
  EXPECT_FALSE(b.Allow(t + 1));
}

TEST(CircuitBreakerTest, OperatorOverrides) {
  CircuitBreaker b(Small());
  b.Force(BreakerOverride::kForcedOpen);
  EXPECT_FALSE(b.Allow(0));
  b.Force(BreakerOverride::kForcedClosed);
  for (int i = 0; i < 10; ++i) b.Record(false, 1, 0, 0);
  EXPECT_TRUE(b.Allow(0)) << "forced closed ignores failures";
  b.Force(BreakerOverride::kNone);
  EXPECT_EQ(b.state(0), BreakerState::kClosed);
}

}  // namespace
}  // namespace kv::control
