// Membership changes as pure functions of the configuration (etcd-raft's confchange package):
// whether a change may be proposed in a configuration, and what it makes of it. Raft applies a
// change when its entry commits; the checks that need the leader's view of its followers (has a
// learner caught up?) stay in Raft::ProposeConfChange.
//
// Single-step changes add, promote and remove one member. A joint change (CONF_ENTER_JOINT)
// replaces the voter set in one step that is safe throughout: until CONF_LEAVE_JOINT commits,
// the old voters stay as outgoing voters and every quorum needs a majority of both sets, so no
// intermediate configuration can lose a write a single failure of either set could not.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kvstore/v1/raft.pb.h"
#include "raft/quorum.h"

namespace kv::raft {

// OK when `cc` may be proposed in `conf`; otherwise why not (a status a person can act on).
absl::Status CheckConfChange(const raftpb::ConfState& conf, const raftpb::ConfChange& cc);
// The configuration after `cc`. A change CheckConfChange refuses changes nothing (a committed
// entry must apply deterministically everywhere, even one a buggy leader let through).
raftpb::ConfState ApplyConfChange(const raftpb::ConfState& conf, const raftpb::ConfChange& cc);

// The quorums of a configuration.
QuorumConfig QuorumOf(const raftpb::ConfState& conf);
// Every member once: incoming voters, then outgoing-only voters, then learners.
std::vector<const raftpb::Member*> MembersOf(const raftpb::ConfState& conf);
bool IsVoterIn(const raftpb::ConfState& conf, uint64_t id);
bool IsMemberOf(const raftpb::ConfState& conf, uint64_t id);

}  // namespace kv::raft
