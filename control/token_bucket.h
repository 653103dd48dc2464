// TokenBucket: a rate limit of `rate` tokens per second with room for `burst`. Time is passed in
// (never read from a clock here), so tests are exact. Not thread-safe; callers lock.
#pragma once

#include <algorithm>
#include <cstdint>

namespace kv::control {

class TokenBucket {
 public:
  TokenBucket(double rate_per_sec, double burst, int64_t now_us)
      : rate_(rate_per_sec), burst_(burst), tokens_(burst), last_us_(now_us) {}

  // Takes one token if available. Otherwise returns false and sets *retry_after_us to when one
  // will be.
  bool TryTake(int64_t now_us, int64_t* retry_after_us = nullptr) {
    Refill(now_us);
    if (tokens_ >= 1.0) {
      tokens_ -= 1.0;
      return true;
    }
    if (retry_after_us) {
      *retry_after_us =
          rate_ <= 0 ? 1'000'000 : static_cast<int64_t>((1.0 - tokens_) / rate_ * 1e6) + 1;
    }
    return false;
  }
  void Reconfigure(double rate_per_sec, double burst, int64_t now_us) {
    Refill(now_us);
    rate_ = rate_per_sec;
    burst_ = burst;
    tokens_ = std::min(tokens_, burst_);
  }
  double tokens(int64_t now_us) {
    Refill(now_us);
    return tokens_;
  }

 private:
  void Refill(int64_t now_us) {
    if (now_us > last_us_) {
      tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_us - last_us_) / 1e6);
      last_us_ = now_us;
    }
  }
  double rate_;
  double burst_;
  double tokens_;
  int64_t last_us_;
};

}  // namespace kv::control
