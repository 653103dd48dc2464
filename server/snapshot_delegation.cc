#include "server/snapshot_delegation.h"

#include <tuple>

namespace kv::server {

int Closeness(const NodeLocality& a, const NodeLocality& b) {
  if (a.region != b.region) return 0;
  return a.zone == b.zone ? 2 : 1;
}

uint64_t ChooseSnapshotSender(uint64_t leader, uint64_t target, uint64_t min_index,
                              const std::vector<raft::PeerStatus>& peers,
                              const std::function<NodeLocality(uint64_t)>& locality_of) {
  auto where = [&](uint64_t node) { return locality_of ? locality_of(node) : NodeLocality{}; };
  const NodeLocality to = where(target);
  const int leader_closeness = Closeness(where(leader), to);
  uint64_t best = 0;
  std::tuple<int, uint64_t> best_rank{-1, 0};
  for (const auto& p : peers) {
    if (p.id == target || p.id == leader || !p.recent_active || p.applied < min_index) continue;
    int closeness = Closeness(where(p.id), to);
    if (closeness <= leader_closeness) continue;
    std::tuple<int, uint64_t> rank{closeness, p.applied};
    // Peers come in id order, so a strict improvement keeps the lowest id among equals.
    if (rank > best_rank) {
      best_rank = rank;
      best = p.id;
    }
  }
  return best;
}

void SnapshotDelegations::Started(uint64_t group, uint64_t target, uint64_t delegate,
                                  absl::Time deadline) {
  outstanding_[{group, target}] = Outstanding{delegate, deadline};
}

bool SnapshotDelegations::Finished(uint64_t group, uint64_t target, uint64_t delegate, bool ok) {
  auto it = outstanding_.find({group, target});
  if (it == outstanding_.end() || it->second.delegate != delegate) return false;
  outstanding_.erase(it);
  if (!ok) fallback_[{group, target}] = true;
  return true;
}

std::vector<SnapshotDelegations::Key> SnapshotDelegations::TakeExpired(absl::Time now) {
  std::vector<Key> expired;
  for (auto it = outstanding_.begin(); it != outstanding_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    expired.push_back(it->first);
    fallback_[it->first] = true;
    it = outstanding_.erase(it);
  }
  return expired;
}

bool SnapshotDelegations::TakeFallback(uint64_t group, uint64_t target) {
  return fallback_.erase({group, target}) > 0;
}

void SnapshotDelegations::Cancel(uint64_t group, uint64_t target) {
  outstanding_.erase({group, target});
}

void SnapshotDelegations::ForgetGroup(uint64_t group) {
  auto drop = [group](auto& m) {
    for (auto it = m.lower_bound({group, 0}); it != m.end() && it->first.first == group;) {
      it = m.erase(it);
    }
  };
  drop(outstanding_);
  drop(fallback_);
}

}  // namespace kv::server
