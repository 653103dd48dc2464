#include "tests/support/linearizability.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace kv::testing {
namespace {

struct KeySearch {
  const std::vector<Operation>* ops;
  std::set<std::pair<uint64_t, std::optional<std::string>>> seen;
  uint64_t required = 0;  // bitmask of ops that completed (must be linearized)

  bool Search(uint64_t done, const std::optional<std::string>& state) {
    if ((done & required) == required) return true;
    if (!seen.insert({done, state}).second) return false;
    // An op may go next only if it was invoked before every pending op completed.
    uint64_t horizon = Operation::kUnknown;
    for (size_t i = 0; i < ops->size(); ++i) {
      if (!(done & (1ull << i))) horizon = std::min(horizon, (*ops)[i].complete);
    }
    for (size_t i = 0; i < ops->size(); ++i) {
      if (done & (1ull << i)) continue;
      const Operation& op = (*ops)[i];
      if (op.invoke > horizon) continue;
      if (op.kind == Operation::Kind::kGet) {
        if (op.value == state && Search(done | (1ull << i), state)) return true;
      } else if (Search(done | (1ull << i), op.value)) {
        return true;
      }
    }
    return false;
  }
};

std::string Describe(const std::vector<Operation>& ops) {
  std::ostringstream out;
  for (const auto& op : ops) {
    out << "  [" << op.invoke << ", "
        << (op.complete == Operation::kUnknown ? std::string("?") : std::to_string(op.complete))
        << "] " << (op.kind == Operation::Kind::kPut ? "put " : "get -> ")
        << (op.value ? *op.value : std::string("<absent>")) << "\n";
  }
  return out.str();
}

}  // namespace

CheckResult CheckLinearizable(const std::vector<Operation>& history, size_t max_ops_per_key) {
  std::map<std::string, std::vector<Operation>> by_key;
  for (const auto& op : history) by_key[op.key].push_back(op);
  max_ops_per_key = std::min<size_t>(max_ops_per_key, 64);
  for (auto& [key, ops] : by_key) {
    std::sort(ops.begin(), ops.end(),
              [](const Operation& a, const Operation& b) { return a.invoke < b.invoke; });
    if (ops.size() > max_ops_per_key) {
      return {false, "key '" + key + "' has " + std::to_string(ops.size()) +
                         " operations; the checker's bound is " + std::to_string(max_ops_per_key)};
    }
    KeySearch search;
    search.ops = &ops;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].complete != Operation::kUnknown) search.required |= 1ull << i;
    }
    if (!search.Search(0, std::nullopt)) {
      return {false, "history of key '" + key + "' is not linearizable:\n" + Describe(ops)};
    }
  }
  return {};
}

}  // namespace kv::testing
