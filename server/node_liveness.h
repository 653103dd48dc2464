// NodeLiveness: which peer nodes this node still hears from. One record per node, not per
// group: any accepted peer traffic counts, and the driver's liveness beats (one per peer node
// every few ticks) keep it fresh while every shared group is quiet. A node not heard from for
// `lapse_after` has lapsed; the transition is reported once, so the driver wakes the quiet
// groups that node is a member of; so is its return (a quiet leader on either side of a healed
// partition may be stale, or have a follower to catch up, and nothing else would wake it). Pure
// logic: time is passed in. Thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "absl/time/time.h"

namespace kv::server {

class NodeLiveness {
 public:
  explicit NodeLiveness(absl::Duration lapse_after) : lapse_after_(lapse_after) {}

  void Heard(uint64_t node, absl::Time now);
  // Starts tracking `node` as if just heard (a peer that appears in a group's membership gets a
  // full lapse period before it counts as gone).
  void Track(uint64_t node, absl::Time now);
  // Nodes that were live and are no longer (each reported once per lapse).
  std::vector<uint64_t> TakeNewlyLapsed(absl::Time now);
  // Nodes heard from again since they lapsed (each reported once per return).
  std::vector<uint64_t> TakeReturned();
  bool IsLive(uint64_t node, absl::Time now) const;
  // The members among `nodes` that are not live (never heard from counts as not live).
  std::set<uint64_t> Unreachable(const std::set<uint64_t>& nodes, absl::Time now) const;
  // Since `node` was last heard from; InfiniteDuration() if never.
  absl::Duration SinceHeard(uint64_t node, absl::Time now) const;

 private:
  struct Peer {
    absl::Time heard = absl::InfinitePast();
    bool lapsed = false;
  };
  const absl::Duration lapse_after_;
  std::map<uint64_t, Peer> peers_;
  std::set<uint64_t> returned_;
};

}  // namespace kv::server
