#include "raft/quorum.h"

#include <algorithm>
#include <vector>

namespace kv::raft {

uint64_t MajorityConfig::QuorumIndex(const std::function<uint64_t(uint64_t)>& acked) const {
  if (voters_.empty()) return std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> indexes;
  indexes.reserve(voters_.size());
  for (uint64_t id : voters_) indexes.push_back(acked(id));
  // The majority-th largest: that many voters acknowledged at least it.
  size_t majority = voters_.size() / 2 + 1;
  std::nth_element(indexes.begin(), indexes.begin() + static_cast<ptrdiff_t>(majority - 1),
                   indexes.end(), std::greater<>());
  return indexes[majority - 1];
}

VoteResult MajorityConfig::Vote(const std::function<std::optional<bool>(uint64_t)>& vote) const {
  if (voters_.empty()) return VoteResult::kWon;
  size_t granted = 0, missing = 0;
  for (uint64_t id : voters_) {
    auto v = vote(id);
    if (!v) {
      ++missing;
    } else if (*v) {
      ++granted;
    }
  }
  size_t majority = voters_.size() / 2 + 1;
  if (granted >= majority) return VoteResult::kWon;
  if (granted + missing >= majority) return VoteResult::kPending;
  return VoteResult::kLost;
}

std::set<uint64_t> QuorumConfig::Voters() const {
  std::set<uint64_t> all = incoming_.voters();
  all.insert(outgoing_.voters().begin(), outgoing_.voters().end());
  return all;
}

bool QuorumConfig::OnlyVoterIs(uint64_t id) const {
  // Asked on every lease read: no allocation.
  auto only = [id](const MajorityConfig& m) { return m.voters().size() == 1 && m.Contains(id); };
  return only(incoming_) && (outgoing_.empty() || only(outgoing_));
}

uint64_t QuorumConfig::QuorumIndex(const std::function<uint64_t(uint64_t)>& acked) const {
  uint64_t index = std::min(incoming_.QuorumIndex(acked), outgoing_.QuorumIndex(acked));
  // No voters at all (a group being created): nothing is acknowledged.
  return index == std::numeric_limits<uint64_t>::max() ? 0 : index;
}

VoteResult QuorumConfig::Vote(const std::function<std::optional<bool>(uint64_t)>& vote) const {
  if (incoming_.empty() && outgoing_.empty()) return VoteResult::kLost;
  VoteResult in = incoming_.Vote(vote), out = outgoing_.Vote(vote);
  if (in == VoteResult::kWon && out == VoteResult::kWon) return VoteResult::kWon;
  if (in == VoteResult::kLost || out == VoteResult::kLost) return VoteResult::kLost;
  return VoteResult::kPending;
}

bool QuorumConfig::HasQuorum(const std::function<bool(uint64_t)>& active) const {
  return QuorumIndex([&](uint64_t id) -> uint64_t { return active(id) ? 1 : 0; }) >= 1;
}

}  // namespace kv::raft
