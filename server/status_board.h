// StatusBoard: what the driver publishes about each group it hosts, for every other thread:
// full status (admin, health, metrics), cheap per-request leader hints, membership for the peer
// service's checks, and the addresses of peer nodes. Written by the driver thread after each
// iteration, for the groups that iteration touched; read by any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "kvstore/v1/raft.pb.h"
#include "raft/raft.h"

namespace kv::server {

struct GroupStatus {
  uint64_t group_id = 0;
  raft::Role role = raft::Role::kFollower;
  uint64_t term = 0;
  uint64_t leader_id = 0;
  std::string leader_address;
  uint64_t commit = 0;
  uint64_t applied = 0;
  uint64_t first_index = 0;
  uint64_t last_index = 0;
  raftpb::ConfState conf;
  std::set<uint64_t> removed;  // members this node saw leave the group
  std::set<uint64_t> vouched;  // members of a newer membership the metadata names
  // The encoded keys the replica here owns, as of its shard's split generation.
  std::string span_start, span_end;
  uint64_t generation = 0;
  std::vector<raft::PeerStatus> peers;
  bool quiesced = false;
  std::set<uint64_t> missing_on;  // members that answered they host no replica of the group
  uint64_t fsyncs = 0;
  uint64_t entries_persisted = 0;
  double fsync_p99_ms = 0;      // over the last 256 synced writes
  double apply_p99_ms = 0;      // over the last 256 apply batches
  double heartbeat_age_ms = 0;  // follower: since the leader (or its node, when quiet) was heard
  uint64_t proposals = 0;
  uint64_t leader_changes = 0;
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_installed = 0;
  // Node-wide: peer calls and messages refused (unauthenticated, not a member, malformed).
  uint64_t peer_refused = 0;
};

// May `node` send a group with this membership traffic? A member may; so may any authenticated
// peer while the group has no members yet (a node started with --join); so may a member of a
// newer membership the metadata vouches for (this replica lags behind the change that added
// it: a new leader must be able to catch it up, even one it saw removed before); so may a node
// whose certificate names it when this node has not seen it as a member yet, unless it saw it
// removed.
bool SenderAllowed(const raftpb::ConfState& conf, const std::set<uint64_t>& removed,
                   const std::set<uint64_t>& vouched, uint64_t node, bool certified);

class StatusBoard {
 public:
  explicit StatusBoard(uint64_t self_id, std::string self_client_address);

  // Driver thread. `conf_changed`: s.conf differs from what was last published.
  void Publish(const GroupStatus& s, bool conf_changed);
  void Remove(uint64_t group_id);
  void SetAddress(uint64_t node_id, const std::string& peer_address);
  // Any thread (the peer service, as batches arrive).
  void LearnClientAddress(uint64_t node_id, std::string client_address);

  // Any thread.
  GroupStatus Status(uint64_t group_id) const;
  std::vector<uint64_t> GroupIds() const;
  bool Hosts(uint64_t group_id) const;
  // The group hosted here whose replica owns `encoded_key` (0 when none does).
  uint64_t HostedGroupFor(std::string_view encoded_key) const;
  bool IsMemberOf(uint64_t group_id, uint64_t node) const;
  bool MayReceiveFrom(uint64_t group_id, uint64_t node, bool certified) const;
  // A group hosted here that `node` may not send traffic (false for a group not hosted: the
  // driver answers those).
  bool Refuses(uint64_t group_id, uint64_t node, bool certified) const;
  bool IsLeader(uint64_t group_id) const;
  uint64_t LeaderId(uint64_t group_id) const;
  std::string LeaderAddress(uint64_t group_id) const;
  // Where peers and clients reach a node ("" when unknown).
  std::string AddressOf(uint64_t node_id) const;
  std::string ClientAddressOf(uint64_t node_id) const;

 private:
  // Per group, read on every request without the board's lock.
  struct LeaderHint {
    std::atomic<bool> is_leader{false};
    std::atomic<uint64_t> leader_id{0};
    mutable absl::Mutex mu;
    std::string address ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<const LeaderHint> Hint(uint64_t group_id) const;

  const uint64_t self_id_;
  const std::string self_client_address_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, GroupStatus> status_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<LeaderHint>> hints_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::string> addresses_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::string> client_addresses_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv::server
