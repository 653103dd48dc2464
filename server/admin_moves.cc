// AdminService::MoveReplica: a replica of a shard moved between nodes through joint consensus.
#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "raft/confchange.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/logging.h"
#include "server/metadata.h"

namespace kv::server {
namespace {

absl::Status Refuse(absl::StatusCode code, const std::string& why) {
  return absl::Status(code, why);
}

std::set<uint64_t> VotersOf(const raftpb::ConfState& conf) {
  std::set<uint64_t> ids;
  for (const auto& m : conf.voters()) ids.insert(m.id());
  return ids;
}

}  // namespace

grpc::Status AdminService::MoveReplica(grpc::ServerContext* ctx, const v1::MoveReplicaRequest* req,
                                       v1::MoveReplicaResponse* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  auto voters = MoveReplicaHere(req->shard_id(), req->from_node(), req->to_node());
  if (!voters.ok()) return ToGrpcStatus(voters.status());
  for (uint64_t v : *voters) resp->add_voters(v);
  return grpc::Status::OK;
}

absl::StatusOr<std::vector<uint64_t>> AdminService::MoveReplicaHere(uint64_t group, uint64_t from,
                                                                    uint64_t to) {
  if (from == 0 || to == 0 || from == to) {
    return Refuse(absl::StatusCode::kInvalidArgument, "--from and --to must be two node ids");
  }
  if (group == kMetadataGroupId || group == kDefaultDataGroupId) {
    return Refuse(absl::StatusCode::kFailedPrecondition,
                  "groups 0 and 1 have a replica on every member: use kvctl member add/remove");
  }
  if (!driver_->board().Hosts(group)) {
    // Name a replica that is up, so that a client asking any node is sent on.
    return Refuse(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("shard ", group, " has no replica on node ", driver_->node_id(),
                               "; ask one of its replicas", metadata_->AReplicaToAsk(group)));
  }
  if (!driver_->IsLeader(group)) {
    uint64_t leader = driver_->LeaderId(group);
    return Refuse(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("not the leader of shard ", group, "; its leader is node ", leader,
                               " at ", driver_->ClientAddressOf(leader)));
  }
  auto target = metadata_->Node(to);
  if (!target || target->state() != internal::NodeRecord::UP || target->down() ||
      target->peer_address().empty()) {
    return Refuse(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("node ", to, " is not a registered node that is up"));
  }
  raftpb::ConfState conf = driver_->Status(group).conf;
  std::set<uint64_t> voters = VotersOf(conf);
  bool done = voters.contains(to) && !voters.contains(from) && conf.voters_outgoing_size() == 0;
  if (!done && !raft::IsVoterIn(conf, from)) {
    return Refuse(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("node ", from, " is not a voter of shard ", group,
                               " (voters: ", absl::StrJoin(voters, ", "), ")"));
  }
  if (!done && voters.contains(to)) {
    return Refuse(absl::StatusCode::kAlreadyExists,
                  absl::StrCat("node ", to, " is already a voter of shard ", group));
  }
  if (!done && from == driver_->node_id()) {
    // The leader is not removed by a change it leads: hand leadership away, and let the client
    // ask the new leader.
    for (uint64_t v : voters) {
      if (v != from) {
        driver_->TransferLeadership(group, v);
        return Refuse(absl::StatusCode::kUnavailable,
                      absl::StrCat("node ", from, " led shard ", group,
                                   "; leadership is being handed to node ", v, ": retry"));
      }
    }
  }
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  if (!done && !raft::IsMemberOf(conf, to)) {
    raftpb::ConfChange add;
    add.set_type(raftpb::CONF_ADD_LEARNER);
    add.set_node_id(to);
    add.set_address(target->peer_address());
    if (auto s = ChangeOneGroup(group, add, std::min(deadline, absl::Now() + absl::Seconds(5)));
        !s.ok()) {
      return s.status();
    }
    logging::Info(logging::Group{group}, "move: node {} added as a learner", to);
  }
  if (!done) {
    raftpb::ConfChange joint;
    joint.set_type(raftpb::CONF_ENTER_JOINT);
    for (uint64_t v : voters) {
      if (v != from) joint.add_voters()->set_id(v);
    }
    joint.add_voters()->set_id(to);
    // The learner catches up first (a snapshot streamed to it): until then Raft refuses to
    // make it a voter, and the change is proposed again.
    absl::StatusOr<uint64_t> index;
    do {
      // Short steps, so that a shutdown never waits long on a driver that stopped.
      index = ChangeOneGroup(group, joint, std::min(deadline, absl::Now() + absl::Seconds(5)));
      if (index.ok() || !absl::IsFailedPrecondition(index.status()) || !driver_->IsLeader(group) ||
          stopping_.load()) {
        break;
      }
      absl::SleepFor(absl::Milliseconds(100));
    } while (absl::Now() < deadline);
    if (!index.ok()) return index.status();
    logging::Info(logging::Group{group}, "move: joint change to voters {} (node {} out)",
                  absl::StrJoin(joint.voters(), ",",
                                [](std::string* out, const raftpb::Member& m) {
                                  absl::StrAppend(out, m.id());
                                }),
                  from);
  }
  // The leader leaves the joint configuration on its own; answer once it has.
  while (absl::Now() < deadline && !stopping_.load()) {
    conf = driver_->Status(group).conf;
    if (conf.voters_outgoing_size() == 0 && raft::IsVoterIn(conf, to) &&
        !raft::IsMemberOf(conf, from)) {
      std::set<uint64_t> after = VotersOf(conf);
      return std::vector<uint64_t>(after.begin(), after.end());
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return Refuse(absl::StatusCode::kDeadlineExceeded,
                absl::StrCat("the move of shard ", group, " did not finish in 60 s; retry"));
}

}  // namespace kv::server
