#include "server/admin_service.h"

#include <future>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "raft/confchange.h"
#include "server/grpc_status.h"
#include "server/node_config.h"

namespace kv::server {
namespace {

raftpb::ConfChange Change(raftpb::ConfChangeType type, uint64_t node_id,
                          const std::string& address = "") {
  raftpb::ConfChange cc;
  cc.set_type(type);
  cc.set_node_id(node_id);
  cc.set_address(address);
  return cc;
}

absl::Time Deadline(const grpc::ServerContext* ctx, absl::Duration fallback) {
  auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::Now() + fallback;
  return absl::FromChrono(d);
}

}  // namespace

AdminService::AdminService(RaftDriver* driver, std::vector<uint64_t> group_ids, uint64_t cluster_id,
                           const Authenticator* auth, Replica* metadata_group,
                           const ClusterMetadata* metadata, ShardSplitter* splitter,
                           ShardMerger* merger)
    : driver_(driver),
      group_ids_(std::move(group_ids)),
      group_id_(group_ids_.front()),
      cluster_id_(cluster_id),
      auth_(auth),
      metadata_group_(metadata_group),
      metadata_(metadata),
      splitter_(splitter),
      merger_(merger) {}

grpc::Status AdminService::ClusterStatus(grpc::ServerContext*, const v1::ClusterStatusRequest*,
                                         v1::ClusterStatusResponse* resp) {
  GroupStatus s = driver_->Status(group_id_);
  resp->set_node_id(driver_->node_id());
  resp->set_group_id(group_id_);
  resp->set_cluster_id(cluster_id_);
  resp->set_role(raft::RoleName(s.role));
  resp->set_term(s.term);
  resp->set_leader_id(s.leader_id);
  resp->set_commit_index(s.commit);
  resp->set_applied_index(s.applied);
  resp->set_last_index(s.last_index);
  resp->set_first_index(s.first_index);
  resp->set_fsyncs(s.fsyncs);
  resp->set_entries_persisted(s.entries_persisted);
  auto add = [&](const raftpb::Member& m, bool voter) {
    auto* out = resp->add_members();
    out->set_id(m.id());
    out->set_address(m.address());
    out->set_client_address(driver_->ClientAddressOf(m.id()));
    out->set_voter(voter);
    if (m.id() == driver_->node_id()) {
      out->set_match_index(s.last_index);
      out->set_applied_index(s.applied);
      out->set_reachable(true);
      out->set_state("self");
      return;
    }
    for (const auto& p : s.peers) {
      if (p.id != m.id()) continue;
      out->set_match_index(p.match);
      out->set_applied_index(p.applied);
      out->set_lag(s.last_index > p.match ? s.last_index - p.match : 0);
      out->set_reachable(p.recent_active);
      out->set_state(p.state);
    }
  };
  for (const raftpb::Member* m : raft::MembersOf(s.conf)) add(*m, raft::IsVoterIn(s.conf, m->id()));
  return grpc::Status::OK;
}

absl::StatusOr<uint64_t> AdminService::ChangeOneGroup(uint64_t group_id,
                                                      const raftpb::ConfChange& cc,
                                                      absl::Time deadline) {
  auto proposed = std::make_shared<std::promise<absl::StatusOr<uint64_t>>>();
  auto future = proposed->get_future();
  driver_->ChangeMembership(group_id, cc, [proposed](absl::StatusOr<uint64_t> index) {
    proposed->set_value(std::move(index));
  });
  if (future.wait_until(absl::ToChronoTime(deadline)) != std::future_status::ready) {
    return absl::DeadlineExceededError("driver did not answer in time");
  }
  auto index = future.get();
  if (!index.ok() || *index == 0) return index;
  // Answer once the change is applied here, so status right after shows it.
  auto applied = std::make_shared<std::promise<absl::Status>>();
  auto applied_future = applied->get_future();
  driver_->WaitForApplied(group_id, *index, deadline,
                          [applied](absl::Status s) { applied->set_value(std::move(s)); });
  if (applied_future.wait_until(absl::ToChronoTime(deadline + absl::Seconds(1))) !=
          std::future_status::ready ||
      !applied_future.get().ok()) {
    return absl::DeadlineExceededError(absl::StrCat("membership change proposed at index ", *index,
                                                    " of group ", group_id,
                                                    " but not applied before the deadline"));
  }
  // Published with the end of that driver iteration (microseconds later).
  while (driver_->Status(group_id).applied < *index && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return index;
}

grpc::Status AdminService::ChangeMembership(grpc::ServerContext* ctx, const raftpb::ConfChange& cc,
                                            v1::MembershipResponse* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (cc.type() == raftpb::CONF_ADD_LEARNER) {
    // Refused outright when the id is already a member everywhere (a retry of a partial change
    // passes: the groups still missing it take it); an address in use is refused by Raft.
    bool everywhere = true;
    for (uint64_t group : group_ids_) {
      everywhere = everywhere && driver_->IsMemberOf(group, cc.node_id());
    }
    if (everywhere) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          absl::StrCat("node ", cc.node_id(), " is already a member"));
    }
  }
  absl::Time deadline = Deadline(ctx, absl::Seconds(10));
  uint64_t data_index = 0;
  for (uint64_t group : group_ids_) {
    auto index = ChangeOneGroup(group, cc, deadline);
    // The metadata group's leadership follows the data group's leader (the driver hands it
    // over), but right after a failover it can still sit on another node for a moment: a leader
    // of the data group waits for it rather than failing the change halfway.
    while (!index.ok() && group != group_id_ && absl::IsFailedPrecondition(index.status()) &&
           !driver_->IsLeader(group) && driver_->IsLeader(group_id_) &&
           absl::Now() + absl::Milliseconds(50) < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
      index = ChangeOneGroup(group, cc, deadline);
    }
    if (!index.ok()) return ToGrpcStatus(index.status());
    if (group == group_id_) data_index = *index;
  }
  resp->set_index(data_index);
  return grpc::Status::OK;
}

grpc::Status AdminService::AddMember(grpc::ServerContext* ctx, const v1::AddMemberRequest* req,
                                     v1::MembershipResponse* resp) {
  if (req->node_id() == 0 || req->address().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "member add needs a node id >= 1 and its HOST:PORT peer address");
  }
  if (auto s = ValidateAddress(req->address(), "member address"); !s.ok()) {
    return ToGrpcStatus(s);
  }
  return ChangeMembership(ctx, Change(raftpb::CONF_ADD_LEARNER, req->node_id(), req->address()),
                          resp);
}

grpc::Status AdminService::PromoteMember(grpc::ServerContext* ctx, const v1::MemberRequest* req,
                                         v1::MembershipResponse* resp) {
  return ChangeMembership(ctx, Change(raftpb::CONF_PROMOTE_LEARNER, req->node_id()), resp);
}

grpc::Status AdminService::RemoveMember(grpc::ServerContext* ctx, const v1::MemberRequest* req,
                                        v1::MembershipResponse* resp) {
  return ChangeMembership(ctx, Change(raftpb::CONF_REMOVE_NODE, req->node_id()), resp);
}

grpc::Status AdminService::TransferLeader(grpc::ServerContext* ctx,
                                          const v1::TransferLeaderRequest* req,
                                          v1::TransferLeaderResponse* resp) {
  if (auto denied = auth_->RequireAdmin(*ctx); !denied.ok()) return ToGrpcStatus(denied);
  GroupStatus s = driver_->Status(group_id_);
  if (s.role != raft::Role::kLeader) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("not the leader; the leader is node ", s.leader_id, " at ", s.leader_address));
  }
  uint64_t target = req->to_node();
  if (target == 0) {
    // The most caught-up reachable voter.
    uint64_t best = 0;
    for (const auto& p : s.peers) {
      if (p.voter && p.recent_active && p.match >= best) {
        best = p.match;
        target = p.id;
      }
    }
    if (target == 0) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "no reachable voter to hand to");
    }
  }
  driver_->TransferLeadership(group_id_, target);
  absl::Time deadline = Deadline(ctx, absl::Seconds(5));
  while (absl::Now() < deadline) {
    GroupStatus now = driver_->Status(group_id_);
    if (now.leader_id == target) {
      resp->set_leader_id(target);
      return grpc::Status::OK;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      absl::StrCat("node ", target, " did not take over in time"));
}

}  // namespace kv::server
