#include "server/node_liveness.h"

namespace kv::server {

void NodeLiveness::Heard(uint64_t node, absl::Time now) {
  Peer& p = peers_[node];
  if (now > p.heard) p.heard = now;
  if (p.lapsed) returned_.insert(node);
  p.lapsed = false;
}

std::vector<uint64_t> NodeLiveness::TakeReturned() {
  std::vector<uint64_t> out(returned_.begin(), returned_.end());
  returned_.clear();
  return out;
}

void NodeLiveness::Track(uint64_t node, absl::Time now) {
  if (!peers_.contains(node)) Heard(node, now);
}

std::vector<uint64_t> NodeLiveness::TakeNewlyLapsed(absl::Time now) {
  std::vector<uint64_t> lapsed;
  for (auto& [id, p] : peers_) {
    if (!p.lapsed && now - p.heard > lapse_after_) {
      p.lapsed = true;
      lapsed.push_back(id);
    }
  }
  return lapsed;
}

bool NodeLiveness::IsLive(uint64_t node, absl::Time now) const {
  auto it = peers_.find(node);
  return it != peers_.end() && now - it->second.heard <= lapse_after_;
}

std::set<uint64_t> NodeLiveness::Unreachable(const std::set<uint64_t>& nodes,
                                             absl::Time now) const {
  std::set<uint64_t> out;
  for (uint64_t n : nodes) {
    if (!IsLive(n, now)) out.insert(n);
  }
  return out;
}

absl::Duration NodeLiveness::SinceHeard(uint64_t node, absl::Time now) const {
  auto it = peers_.find(node);
  if (it == peers_.end() || it->second.heard == absl::InfinitePast()) {
    return absl::InfiniteDuration();
  }
  return now - it->second.heard;
}

}  // namespace kv::server
