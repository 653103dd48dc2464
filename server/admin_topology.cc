// AdminService's topology calls: node membership and Raft groups.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/system_command.h"

namespace kv::server {
namespace {

const char* StateName(internal::NodeRecord::State s) {
  switch (s) {
    case internal::NodeRecord::UP:
      return "up";
    case internal::NodeRecord::DRAINING:
      return "draining";
    case internal::NodeRecord::REMOVED:
      return "removed";
    default:
      return "unknown";
  }
}

// The first groups predate the metadata records: the metadata group and the default data group.
bool IsFirstGroup(uint64_t id) { return id < kFirstAllocatedGroupId; }

}  // namespace

grpc::Status AdminService::ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                                     v1::ListNodesResponse* resp) {
  for (const auto& n : metadata_->Nodes()) {
    auto* out = resp->add_nodes();
    out->set_id(n.node_id());
    out->set_peer_address(n.peer_address());
    out->set_client_address(n.client_address());
    out->set_region(n.region());
    out->set_zone(n.zone());
    out->set_state(StateName(n.state()));
    out->set_down(n.down());
    out->set_degraded(n.degraded());
    out->set_leaders(n.leaders());
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListGroups(grpc::ServerContext*, const v1::ListGroupsRequest*,
                                      v1::ListGroupsResponse* resp) {
  std::map<uint64_t, v1::GroupInfo> groups;
  for (uint64_t id : driver_->board().GroupIds()) {
    GroupStatus s = driver_->Status(id);
    v1::GroupInfo& g = groups[id];
    g.set_id(id);
    for (const auto& m : s.conf.voters()) g.add_voters(m.id());
    for (const auto& m : s.conf.learners()) g.add_learners(m.id());
    g.set_hosted_here(true);
    g.set_leader_id(s.leader_id);
    g.set_term(s.term);
    g.set_applied_index(s.applied);
    g.set_quiesced(s.quiesced);
    for (uint64_t n : s.missing_on) g.add_missing_on(n);
    g.set_generation(1);
    g.set_conf_version(1);
  }
  for (const auto& d : metadata_->Groups()) {
    v1::GroupInfo& g = groups[d.group_id()];
    g.set_id(d.group_id());
    if (!g.hosted_here()) {
      for (uint64_t v : d.voters()) g.add_voters(v);
      for (uint64_t l : d.learners()) g.add_learners(l);
    }
    g.set_generation(d.epoch().generation());
    g.set_conf_version(d.epoch().conf_version());
  }
  for (auto& [id, g] : groups) *resp->add_groups() = std::move(g);
  return grpc::Status::OK;
}

grpc::Status AdminService::CreateGroups(grpc::ServerContext* ctx,
                                        const v1::CreateGroupsRequest* req,
                                        v1::CreateGroupsResponse* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (req->count() == 0 || req->count() > static_cast<uint32_t>(kMaxGroupsPerCreate)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("--count must be 1 to ", kMaxGroupsPerCreate));
  }
  std::vector<uint64_t> up;
  for (const auto& n : metadata_->Nodes()) {
    if (n.state() == internal::NodeRecord::UP) up.push_back(n.node_id());
  }
  if (up.empty()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "no node has registered yet (is the metadata group led?); retry");
  }
  // The default follows the cluster's size (the metadata group's voters), not the nodes that
  // happen to have registered yet: right after start-up that would give groups one replica.
  uint32_t voters = static_cast<uint32_t>(driver_->Status(kMetadataGroupId).conf.voters_size());
  uint32_t replicas = req->replicas() == 0 ? std::clamp<uint32_t>(voters, 1, 3) : req->replicas();
  if (replicas > static_cast<uint32_t>(kMaxReplicasPerGroup)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("--replicas is at most ", kMaxReplicasPerGroup));
  }
  if (replicas > up.size()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat(replicas, " replicas wanted but ", up.size(),
                                     " node(s) are up and registered; retry once they are"));
  }
  // Spread: each new group starts its replica list one node further round the ring.
  size_t offset = metadata_->Groups().size();
  internal::Command cmd;
  for (uint32_t i = 0; i < req->count(); ++i) {
    auto* d = cmd.mutable_create_groups()->add_groups();
    d->mutable_epoch()->set_generation(1);
    d->mutable_epoch()->set_conf_version(1);
    for (uint32_t r = 0; r < replicas; ++r) d->add_voters(up[(offset + i + r) % up.size()]);
  }
  auto outcome = ProposeSystemCommand(metadata_group_, cmd, absl::Now() + absl::Seconds(10));
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  uint64_t first = outcome->result.current_version();
  for (uint32_t i = 0; i < req->count(); ++i) resp->add_group_ids(first + i);
  return grpc::Status::OK;
}

grpc::Status AdminService::RemoveGroup(grpc::ServerContext* ctx, const v1::RemoveGroupRequest* req,
                                       v1::RemoveGroupResponse*) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (IsFirstGroup(req->group_id())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "groups 0 (metadata) and 1 (default data) cannot be removed");
  }
  bool known = false;
  for (const auto& d : metadata_->Groups()) known = known || d.group_id() == req->group_id();
  if (!known) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no group ", req->group_id()));
  }
  internal::Command cmd;
  cmd.mutable_system_put()->set_key(GroupKey(req->group_id()));
  cmd.mutable_system_put()->set_value("");
  auto outcome = ProposeSystemCommand(metadata_group_, cmd, absl::Now() + absl::Seconds(10));
  return ToGrpcStatus(outcome.status());
}

}  // namespace kv::server
