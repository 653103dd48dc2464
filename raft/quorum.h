// Quorum counting for one Raft group (Raft dissertation §4.3; etcd-raft's quorum package): a
// majority of one voter set, and the joint configuration of two during a membership change,
// where every decision needs a majority of both the incoming and the outgoing voters. Commit
// indexes, ReadIndex rounds, check-quorum and elections all ask the same question through
// QuorumIndex or Vote, so a joint configuration is respected everywhere at once.
// Pure values, thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <set>

namespace kv::raft {

enum class VoteResult { kPending, kLost, kWon };

class MajorityConfig {
 public:
  MajorityConfig() = default;
  explicit MajorityConfig(std::set<uint64_t> voters) : voters_(std::move(voters)) {}
  const std::set<uint64_t>& voters() const { return voters_; }
  bool empty() const { return voters_.empty(); }
  bool Contains(uint64_t id) const { return voters_.contains(id); }

  // The largest index that a majority of the voters acknowledged, given each voter's
  // acknowledged index (0 when none). An empty set imposes no limit: the maximum uint64_t.
  uint64_t QuorumIndex(const std::function<uint64_t(uint64_t id)>& acked) const;
  // Won once a majority granted, lost once a majority can no longer grant; `vote(id)` is true
  // (granted), false (rejected) or nullopt (not yet answered). An empty set wins.
  VoteResult Vote(const std::function<std::optional<bool>(uint64_t id)>& vote) const;

 private:
  std::set<uint64_t> voters_;
};

// The voters of a group: `incoming` alone outside a membership change; while a joint change is
// in progress, also `outgoing` (the voters before it), and both majorities are needed.
class QuorumConfig {
 public:
  QuorumConfig() = default;
  QuorumConfig(MajorityConfig incoming, MajorityConfig outgoing)
      : incoming_(std::move(incoming)), outgoing_(std::move(outgoing)) {}
  const MajorityConfig& incoming() const { return incoming_; }
  const MajorityConfig& outgoing() const { return outgoing_; }
  bool joint() const { return !outgoing_.empty(); }
  bool IsVoter(uint64_t id) const { return incoming_.Contains(id) || outgoing_.Contains(id); }
  // Every voter of either set, once.
  std::set<uint64_t> Voters() const;
  // A group whose only voter is `id` (it needs nobody else for anything).
  bool OnlyVoterIs(uint64_t id) const;

  uint64_t QuorumIndex(const std::function<uint64_t(uint64_t id)>& acked) const;
  VoteResult Vote(const std::function<std::optional<bool>(uint64_t id)>& vote) const;
  // Do the voters in `active` make a quorum (check-quorum, quiescence)?
  bool HasQuorum(const std::function<bool(uint64_t id)>& active) const;

 private:
  MajorityConfig incoming_, outgoing_;
};

}  // namespace kv::raft
