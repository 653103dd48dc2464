// A linearizability checker for histories of a key-value register (put / get per key), after
// Wing & Gong with Lowe's memoization. Keys are independent (linearizability is compositional),
// so each key's history is checked alone. Writes whose outcome is unknown (timeout, crash) may
// take effect at any point after their invocation, or never.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace kv::testing {

struct Operation {
  enum class Kind { kPut, kGet } kind = Kind::kPut;
  std::string key;
  // Put: the value written (unique per put). Get: the value read; nullopt = key absent.
  std::optional<std::string> value;
  uint64_t invoke = 0;
  // Completion time; kUnknown for writes whose outcome is unknown.
  uint64_t complete = 0;
  static constexpr uint64_t kUnknown = std::numeric_limits<uint64_t>::max();
};

struct CheckResult {
  bool ok = true;
  std::string explanation;  // which key failed, and its history
};

// Operations that failed definitely (the server said it did nothing) must not be passed in.
// max_ops_per_key bounds the search; longer histories of one key are reported as errors.
CheckResult CheckLinearizable(const std::vector<Operation>& history, size_t max_ops_per_key = 60);

}  // namespace kv::testing
