// ControlState: this node's view of the replicated cluster settings (kill switch, limits) and the
// admission decision for every client request: kill switch, requests-in-flight cap, token
// buckets per client identity and per method. Settings change when the system keyspace applies
// a new value (so every node obeys what it has applied). Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "control/token_bucket.h"
#include "kvstore/v1/control.pb.h"

namespace kv::server {

inline constexpr char kKillSwitchKey[] = "killswitch";
inline constexpr char kLimitsKey[] = "limits";

class ControlState {
 public:
  // The system keyspace observer.
  void OnSystemKey(const std::string& key, const std::string& value);

  v1::KillSwitchState kill_switch() const;
  v1::LimitsConfig limits() const;
  v1::KillSwitchMode mode() const { return mode_.load(); }

  // Decides whether a client request may run. On OK the caller must call Done() when the
  // request finishes. RESOURCE_EXHAUSTED comes with *retry_after_ms.
  absl::Status Admit(const std::string& method, const std::string& identity, bool is_write,
                     int64_t* retry_after_ms);
  void Done() { in_flight_.fetch_sub(1); }
  // Only the kill switch (for writes forwarded by another node, admitted there already).
  absl::Status CheckKillSwitch(bool is_write);

  // Whether per-client buckets are in force (callers can skip working out the identity).
  bool per_client_limited() const { return per_client_limited_.load(); }

  uint64_t rate_limited() const { return rate_limited_.load(); }
  uint64_t shed() const { return shed_.load(); }
  uint64_t refused_by_kill_switch() const { return refused_by_kill_switch_.load(); }
  int64_t in_flight() const { return in_flight_.load(); }

 private:
  std::atomic<v1::KillSwitchMode> mode_{v1::KILL_SWITCH_OFF};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint32_t> max_in_flight_{0};
  // Any token bucket configured; when false, admission takes no lock.
  std::atomic<bool> rate_limited_mode_{false};
  std::atomic<bool> per_client_limited_{false};
  std::atomic<uint64_t> rate_limited_{0}, shed_{0}, refused_by_kill_switch_{0};

  mutable absl::Mutex mu_;
  v1::KillSwitchState kill_switch_ ABSL_GUARDED_BY(mu_);
  v1::LimitsConfig limits_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, control::TokenBucket> per_client_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, control::TokenBucket> per_method_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv::server
