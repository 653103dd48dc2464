#include "kv/admin.h"

#include "client/admin_impl.h"

namespace kv {

AdminClient::AdminClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AdminClient::~AdminClient() = default;

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(
    std::vector<std::string> endpoints, absl::Duration timeout) {
  AdminOptions options;
  options.endpoints = std::move(endpoints);
  options.timeout = timeout;
  return Connect(std::move(options));
}

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(AdminOptions options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("no endpoints given");
  auto credentials = MakeChannelCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  auto impl = std::make_unique<Impl>();
  impl->endpoints = std::move(options.endpoints);
  impl->timeout = options.timeout;
  impl->admin_token = std::move(options.admin_token);
  impl->tls = std::move(options.tls);
  impl->credentials = *std::move(credentials);
  for (const auto& e : impl->endpoints) impl->stubs.push_back(impl->StubFor(e));
  return std::unique_ptr<AdminClient>(new AdminClient(std::move(impl)));
}

std::vector<NodeStatus> AdminClient::Status(std::vector<std::string>* unreachable) {
  std::vector<NodeStatus> out;
  for (size_t i = 0; i < impl_->stubs.size(); ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + impl_->timeout));
    v1::ClusterStatusResponse r;
    grpc::Status s = impl_->stubs[i]->ClusterStatus(&ctx, {}, &r);
    if (!s.ok()) {
      if (unreachable) {
        unreachable->push_back(absl::StrCat(impl_->endpoints[i], ": ", s.error_message()));
      }
      continue;
    }
    NodeStatus n;
    n.endpoint = impl_->endpoints[i];
    n.node_id = r.node_id();
    n.role = r.role();
    n.term = r.term();
    n.leader_id = r.leader_id();
    n.commit_index = r.commit_index();
    n.applied_index = r.applied_index();
    n.first_index = r.first_index();
    n.last_index = r.last_index();
    n.fsyncs = r.fsyncs();
    n.entries_persisted = r.entries_persisted();
    for (const auto& m : r.members()) {
      n.members.push_back(MemberInfo{m.id(), m.address(), m.voter(), m.match_index(),
                                     m.applied_index(), m.lag(), m.reachable(), m.state(),
                                     m.client_address()});
    }
    out.push_back(std::move(n));
  }
  return out;
}

absl::StatusOr<uint64_t> AdminClient::AddLearner(uint64_t node_id, const std::string& address) {
  v1::AddMemberRequest req;
  req.set_node_id(node_id);
  req.set_address(address);
  auto r = impl_->OnLeader<v1::AddMemberRequest, v1::MembershipResponse>(
      &v1::Admin::Stub::AddMember, req);
  if (!r.ok()) return r.status();
  return r->index();
}

absl::StatusOr<uint64_t> AdminClient::Promote(uint64_t node_id) {
  return impl_->ChangeMember(&v1::Admin::Stub::PromoteMember, node_id);
}

absl::StatusOr<uint64_t> AdminClient::Remove(uint64_t node_id) {
  return impl_->ChangeMember(&v1::Admin::Stub::RemoveMember, node_id);
}

absl::StatusOr<uint64_t> AdminClient::TransferLeader(uint64_t node_id) {
  v1::TransferLeaderRequest req;
  req.set_to_node(node_id);
  auto r = impl_->OnLeader<v1::TransferLeaderRequest, v1::TransferLeaderResponse>(
      &v1::Admin::Stub::TransferLeader, req);
  if (!r.ok()) return r.status();
  return r->leader_id();
}

absl::StatusOr<std::vector<NodeInfo>> AdminClient::ListNodes() {
  auto r = impl_->OnAnyNode<v1::ListNodesRequest, v1::ListNodesResponse>(
      &v1::Admin::Stub::ListNodes, {});
  if (!r.ok()) return r.status();
  std::vector<NodeInfo> out;
  for (const auto& n : r->nodes()) {
    out.push_back(NodeInfo{n.id(), n.peer_address(), n.client_address(), n.region(), n.zone(),
                           n.state(), n.down(), n.degraded(), n.leaders()});
  }
  return out;
}

absl::StatusOr<std::vector<GroupInfo>> AdminClient::ListGroups() {
  auto r = impl_->OnAnyNode<v1::ListGroupsRequest, v1::ListGroupsResponse>(
      &v1::Admin::Stub::ListGroups, {});
  if (!r.ok()) return r.status();
  std::vector<GroupInfo> out;
  for (const auto& g : r->groups()) {
    GroupInfo info;
    info.id = g.id();
    info.voters.assign(g.voters().begin(), g.voters().end());
    info.learners.assign(g.learners().begin(), g.learners().end());
    info.generation = g.generation();
    info.conf_version = g.conf_version();
    info.hosted_here = g.hosted_here();
    info.leader_id = g.leader_id();
    info.term = g.term();
    info.applied_index = g.applied_index();
    info.quiesced = g.quiesced();
    info.missing_on.assign(g.missing_on().begin(), g.missing_on().end());
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<std::vector<uint64_t>> AdminClient::CreateGroups(uint32_t count, uint32_t replicas) {
  v1::CreateGroupsRequest req;
  req.set_count(count);
  req.set_replicas(replicas);
  auto r = impl_->OnAnyNode<v1::CreateGroupsRequest, v1::CreateGroupsResponse>(
      &v1::Admin::Stub::CreateGroups, req);
  if (!r.ok()) return r.status();
  return std::vector<uint64_t>(r->group_ids().begin(), r->group_ids().end());
}

namespace {
KeyspaceInfo FromProto(const v1::KeyspaceInfo& k) {
  KeyspaceInfo info;
  info.id = k.id();
  info.name = k.name();
  info.strategy = k.strategy();
  info.regions.assign(k.regions().begin(), k.regions().end());
  info.replicas = k.replicas();
  for (const auto& s : k.shards()) {
    ShardInfo shard;
    shard.shard_id = s.shard_id();
    shard.start = s.start();
    shard.end = s.end();
    shard.region = s.region();
    shard.replicas.assign(s.replicas().begin(), s.replicas().end());
    shard.leader_id = s.leader_id();
    shard.generation = s.generation();
    shard.conf_version = s.conf_version();
    shard.approximate_bytes = s.approximate_bytes();
    info.shards.push_back(std::move(shard));
  }
  return info;
}
}  // namespace

absl::StatusOr<KeyspaceInfo> AdminClient::CreateKeyspace(const KeyspaceSpec& spec) {
  v1::CreateKeyspaceRequest req;
  req.set_name(spec.name);
  req.set_strategy(spec.strategy);
  req.set_shards(spec.shards);
  req.set_replicas(spec.replicas);
  for (const auto& p : spec.split_points) req.add_split_points(p);
  for (const auto& r : spec.regions) req.add_regions(r);
  auto r = impl_->OnAnyNode<v1::CreateKeyspaceRequest, v1::KeyspaceInfo>(
      &v1::Admin::Stub::CreateKeyspace, req);
  if (!r.ok()) return r.status();
  return FromProto(*r);
}

absl::StatusOr<std::vector<KeyspaceInfo>> AdminClient::ListKeyspaces() {
  auto r = impl_->OnAnyNode<v1::ListKeyspacesRequest, v1::ListKeyspacesResponse>(
      &v1::Admin::Stub::ListKeyspaces, {});
  if (!r.ok()) return r.status();
  std::vector<KeyspaceInfo> out;
  for (const auto& k : r->keyspaces()) out.push_back(FromProto(k));
  return out;
}

absl::StatusOr<KeyspaceInfo> AdminClient::DescribeKeyspace(const std::string& name) {
  v1::DescribeKeyspaceRequest req;
  req.set_name(name);
  auto r = impl_->OnAnyNode<v1::DescribeKeyspaceRequest, v1::KeyspaceInfo>(
      &v1::Admin::Stub::DescribeKeyspace, req);
  if (!r.ok()) return r.status();
  return FromProto(*r);
}

absl::Status AdminClient::DropKeyspace(const std::string& name, bool force) {
  v1::DropKeyspaceRequest req;
  req.set_name(name);
  req.set_force(force);
  return impl_
      ->OnAnyNode<v1::DropKeyspaceRequest, v1::DropKeyspaceResponse>(&v1::Admin::Stub::DropKeyspace,
                                                                     req)
      .status();
}

absl::StatusOr<KeyspaceInfo> AdminClient::SplitShard(uint64_t shard_id,
                                                     std::optional<std::string> at,
                                                     uint64_t* child) {
  v1::SplitShardRequest req;
  req.set_shard_id(shard_id);
  if (at) req.set_at(*at);
  auto r = impl_->OnAnyNode<v1::SplitShardRequest, v1::SplitShardResponse>(
      &v1::Admin::Stub::SplitShard, req);
  if (!r.ok()) return r.status();
  if (child) *child = r->child_shard_id();
  return FromProto(r->keyspace());
}

absl::StatusOr<KeyspaceInfo> AdminClient::MergeShard(uint64_t shard_id, uint64_t* survivor,
                                                     uint64_t* absorbed) {
  v1::MergeShardRequest req;
  req.set_shard_id(shard_id);
  auto r = impl_->OnShardLeader<v1::MergeShardRequest, v1::MergeShardResponse>(
      &v1::Admin::Stub::MergeShard, req, absl::Seconds(60));
  if (!r.ok()) return r.status();
  if (survivor) *survivor = r->survivor_shard_id();
  if (absorbed) *absorbed = r->absorbed_shard_id();
  return FromProto(r->keyspace());
}

absl::StatusOr<std::vector<uint64_t>> AdminClient::MoveReplica(uint64_t shard_id, uint64_t from,
                                                               uint64_t to) {
  v1::MoveReplicaRequest req;
  req.set_shard_id(shard_id);
  req.set_from_node(from);
  req.set_to_node(to);
  auto r = impl_->OnShardLeader<v1::MoveReplicaRequest, v1::MoveReplicaResponse>(
      &v1::Admin::Stub::MoveReplica, req, std::max(impl_->timeout, absl::Seconds(90)));
  if (!r.ok()) return r.status();
  return std::vector<uint64_t>(r->voters().begin(), r->voters().end());
}

absl::StatusOr<DrainStatus> AdminClient::DrainNode(uint64_t node_id, bool undo) {
  v1::DrainNodeRequest req;
  req.set_node_id(node_id);
  req.set_undo(undo);
  auto r = impl_->OnAnyNode<v1::DrainNodeRequest, v1::DrainNodeResponse>(
      &v1::Admin::Stub::DrainNode, req);
  if (!r.ok()) return r.status();
  return DrainStatus{r->state(), r->replicas_left(), r->leaders_left()};
}

absl::StatusOr<RebalanceInfo> AdminClient::Rebalance(RebalanceAction action) {
  v1::RebalanceRequest req;
  req.set_action(action == RebalanceAction::kPause    ? v1::RebalanceRequest::PAUSE
                 : action == RebalanceAction::kResume ? v1::RebalanceRequest::RESUME
                                                      : v1::RebalanceRequest::STATUS);
  auto r =
      impl_->OnAnyNode<v1::RebalanceRequest, v1::RebalanceStatus>(&v1::Admin::Stub::Rebalance, req);
  if (!r.ok()) return r.status();
  RebalanceInfo info;
  info.paused = r->paused();
  info.moves_done = r->moves_done();
  info.moving = r->moving();
  info.last_error = r->last_error();
  info.leader_transfers = r->leader_transfers();
  info.nodes_down = r->nodes_down();
  for (const auto& m : r->pending()) {
    info.pending.push_back({m.shard_id(), m.from_node(), m.to_node(), m.reason()});
  }
  for (const auto& u : r->unplaceable()) {
    info.unplaceable.push_back({u.shard_id(), u.stuck_on(), u.reason()});
  }
  return info;
}

absl::Status AdminClient::RemoveGroup(uint64_t group_id) {
  v1::RemoveGroupRequest req;
  req.set_group_id(group_id);
  return impl_
      ->OnAnyNode<v1::RemoveGroupRequest, v1::RemoveGroupResponse>(&v1::Admin::Stub::RemoveGroup,
                                                                   req)
      .status();
}

}  // namespace kv
