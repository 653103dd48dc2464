#include "server/control_state.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/logging.h"

namespace kv::server {
namespace {

int64_t NowMicros() { return absl::GetCurrentTimeNanos() / 1000; }

// Client identities are bounded: past this many buckets, idle ones are forgotten.
constexpr size_t kMaxClientBuckets = 10000;

}  // namespace

namespace {

// A replicated setting that does not decode keeps the previous one in force; an operator must
// hear of it (every node applies the same entry, so every node logs it).
void LogMalformed(const std::string& key, const std::string& value) {
  logging::Error(
      "replicated setting '{}' ({} bytes) does not decode; the previous value stays in force", key,
      value.size());
}

}  // namespace

void ControlState::OnSystemKey(const std::string& key, const std::string& value) {
  if (key == kKillSwitchKey) {
    v1::KillSwitchState state;
    if (!state.ParseFromString(value)) {
      LogMalformed(key, value);
      return;
    }
    absl::MutexLock lock(&mu_);
    kill_switch_ = state;
    mode_.store(state.mode());
  } else if (key == kLimitsKey) {
    v1::LimitsConfig limits;
    if (!limits.ParseFromString(value)) {
      LogMalformed(key, value);
      return;
    }
    absl::MutexLock lock(&mu_);
    limits_ = limits;
    max_in_flight_.store(limits.max_in_flight());
    bool per_method = false;
    for (const auto& [method, rps] : limits.per_method_rps()) per_method = per_method || rps > 0;
    per_client_limited_.store(limits.per_client_rps() > 0);
    rate_limited_mode_.store(per_method || limits.per_client_rps() > 0);
    per_client_.clear();  // rebuilt with the new rate on next use
    per_method_.clear();
  }
}

v1::KillSwitchState ControlState::kill_switch() const {
  absl::MutexLock lock(&mu_);
  return kill_switch_;
}

v1::LimitsConfig ControlState::limits() const {
  absl::MutexLock lock(&mu_);
  return limits_;
}

absl::Status ControlState::CheckKillSwitch(bool is_write) {
  v1::KillSwitchMode mode = mode_.load();
  if (mode == v1::KILL_SWITCH_OFF || (mode == v1::KILL_SWITCH_READ_ONLY && !is_write)) {
    return absl::OkStatus();
  }
  refused_by_kill_switch_.fetch_add(1);
  std::string reason;
  {
    absl::MutexLock lock(&mu_);
    reason = kill_switch_.reason();
  }
  if (mode == v1::KILL_SWITCH_HALT) {
    return absl::UnavailableError(absl::StrCat("cluster halted by the kill switch: ", reason));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("cluster is read-only (kill switch): ", reason));
}

absl::Status ControlState::Admit(const std::string& method, const std::string& identity,
                                 bool is_write, int64_t* retry_after_ms) {
  if (auto s = CheckKillSwitch(is_write); !s.ok()) return s;
  uint32_t cap = max_in_flight_.load();
  int64_t now_in_flight = in_flight_.fetch_add(1) + 1;
  if (cap > 0 && now_in_flight > static_cast<int64_t>(cap)) {
    in_flight_.fetch_sub(1);
    shed_.fetch_add(1);
    *retry_after_ms = 20;
    return absl::ResourceExhaustedError(absl::StrCat(
        "node overloaded: ", cap, " requests in flight (limit max_in_flight); retry later"));
  }
  if (!rate_limited_mode_.load()) return absl::OkStatus();
  int64_t now = NowMicros();
  int64_t wait_us = 0;
  absl::MutexLock lock(&mu_);
  auto method_rate = limits_.per_method_rps().find(method);
  if (method_rate != limits_.per_method_rps().end() && method_rate->second > 0) {
    auto [it, fresh] = per_method_.try_emplace(method, method_rate->second,
                                               std::max(1.0, method_rate->second / 10), now);
    if (!it->second.TryTake(now, &wait_us)) {
      in_flight_.fetch_sub(1);
      rate_limited_.fetch_add(1);
      *retry_after_ms = std::max<int64_t>(1, wait_us / 1000);
      return absl::ResourceExhaustedError(
          absl::StrCat("rate limit of ", method, " (", method_rate->second, "/s) exceeded"));
    }
  }
  if (limits_.per_client_rps() > 0) {
    if (per_client_.size() >= kMaxClientBuckets && !per_client_.contains(identity)) {
      per_client_.clear();
    }
    double burst = limits_.per_client_burst() > 0 ? limits_.per_client_burst()
                                                  : std::max(1.0, limits_.per_client_rps() / 10);
    auto [it, fresh] = per_client_.try_emplace(identity, limits_.per_client_rps(), burst, now);
    if (!it->second.TryTake(now, &wait_us)) {
      in_flight_.fetch_sub(1);
      rate_limited_.fetch_add(1);
      *retry_after_ms = std::max<int64_t>(1, wait_us / 1000);
      return absl::ResourceExhaustedError(absl::StrCat("rate limit of client ", identity, " (",
                                                       limits_.per_client_rps(), "/s) exceeded"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kv::server
