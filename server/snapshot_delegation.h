// Delegated snapshots: a leader that must send a replica a snapshot may ask another replica that
// has applied enough, and is closer to the receiver (its zone, or its region, where the leader
// is not), to stream its own snapshot instead. A replica added in a far region is then filled
// from a neighbour instead of across the WAN (CockroachDB's delegated snapshots do the same).
// Where no replica is closer than the leader (an unlabelled cluster), the leader sends it: a
// delegation costs an extra hop and a window in which a lost request or report stalls the
// receiver until the timeout, which the whole-node simulation showed as slower catch-up
// (fewer merges and splits completed) when every snapshot was delegated.
//
// Why this is safe: a replica's applied state at index i is the committed state at i, the same on
// every replica, so any replica's snapshot is a valid one. It is sent in the leader's name (from
// = the leader, term = the leader's term, which the delegate checked is its own term and its
// leader), so the receiver answers the leader, exactly as if the leader had sent it.
//
// The leader tracks each delegation until the delegate reports the stream's outcome, or until a
// deadline passes (the delegate may have crashed). After a failure the leader streams the next
// snapshot for that replica itself, so a delegate that cannot help never stalls a replica.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "raft/raft.h"

namespace kv::server {

struct NodeLocality {
  std::string region, zone;
};

// 2: same region and zone (unlabelled nodes are alike), 1: same region, 0: neither.
int Closeness(const NodeLocality& a, const NodeLocality& b);

// Who streams a snapshot to `target`: among `peers` (the leader's view of its followers), one
// heard from recently that has applied at least `min_index` and is closer to the target than
// the leader itself. The closest wins, then the one furthest applied, then the lowest
// id. 0 when none qualifies: the leader sends it.
uint64_t ChooseSnapshotSender(uint64_t leader, uint64_t target, uint64_t min_index,
                              const std::vector<raft::PeerStatus>& peers,
                              const std::function<NodeLocality(uint64_t)>& locality_of);

// The leader's outstanding delegations, per (group, target).
class SnapshotDelegations {
 public:
  using Key = std::pair<uint64_t, uint64_t>;  // (group, target)

  void Started(uint64_t group, uint64_t target, uint64_t delegate, absl::Time deadline);
  // The delegate reported. False when no such delegation is outstanding (a stale or forged
  // report changes nothing). A failure makes the leader send the next snapshot itself.
  bool Finished(uint64_t group, uint64_t target, uint64_t delegate, bool ok);
  // Delegations whose deadline passed, removed; each counts as a failure.
  std::vector<Key> TakeExpired(absl::Time now);
  // True (once) when the last delegation for this target failed.
  bool TakeFallback(uint64_t group, uint64_t target);
  // The leader streams this one itself: any earlier delegation for it is moot.
  void Cancel(uint64_t group, uint64_t target);
  void ForgetGroup(uint64_t group);
  bool empty() const { return outstanding_.empty(); }
  size_t outstanding() const { return outstanding_.size(); }

 private:
  struct Outstanding {
    uint64_t delegate = 0;
    absl::Time deadline;
  };
  std::map<Key, Outstanding> outstanding_;
  std::map<Key, bool> fallback_;
};

}  // namespace kv::server
