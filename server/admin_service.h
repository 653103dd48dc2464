// AdminService: kv.v1.Admin on the client port: cluster status, membership changes, leadership
// transfer, and the topology: nodes and groups. Status describes the first group (the data group).
// Membership changes apply to every group the node hosts (data and metadata groups share their
// members), one group after the other, skipping groups where the change is already in effect, so a
// retry after a partial failure converges. Changes must be made on the leader; elsewhere they fail
// with FAILED_PRECONDITION naming the leader (kvctl finds it by itself). Status is open to every
// caller; every change needs the admin role (Authenticator::RequireAdmin). Rare calls:
// synchronous.
#pragma once

#include <atomic>
#include <vector>

#include "kvstore/v1/admin.grpc.pb.h"
#include "server/authenticator.h"
#include "server/metadata.h"
#include "server/raft_driver.h"
#include "server/replica.h"
#include "server/shard_merger.h"
#include "server/shard_splitter.h"

namespace kv::server {

class AdminService final : public v1::Admin::Service {
 public:
  // `metadata_group`: where node and group records are proposed; `metadata`: this node's view.
  AdminService(RaftDriver* driver, std::vector<uint64_t> group_ids, uint64_t cluster_id,
               const Authenticator* auth, Replica* metadata_group, const ClusterMetadata* metadata,
               ShardSplitter* splitter = nullptr, ShardMerger* merger = nullptr);

  grpc::Status ClusterStatus(grpc::ServerContext* ctx, const v1::ClusterStatusRequest* req,
                             v1::ClusterStatusResponse* resp) override;
  grpc::Status AddMember(grpc::ServerContext* ctx, const v1::AddMemberRequest* req,
                         v1::MembershipResponse* resp) override;
  grpc::Status PromoteMember(grpc::ServerContext* ctx, const v1::MemberRequest* req,
                             v1::MembershipResponse* resp) override;
  grpc::Status RemoveMember(grpc::ServerContext* ctx, const v1::MemberRequest* req,
                            v1::MembershipResponse* resp) override;
  grpc::Status TransferLeader(grpc::ServerContext* ctx, const v1::TransferLeaderRequest* req,
                              v1::TransferLeaderResponse* resp) override;
  // Topology (admin_topology.cc).
  grpc::Status ListNodes(grpc::ServerContext* ctx, const v1::ListNodesRequest* req,
                         v1::ListNodesResponse* resp) override;
  grpc::Status ListGroups(grpc::ServerContext* ctx, const v1::ListGroupsRequest* req,
                          v1::ListGroupsResponse* resp) override;
  grpc::Status CreateGroups(grpc::ServerContext* ctx, const v1::CreateGroupsRequest* req,
                            v1::CreateGroupsResponse* resp) override;
  grpc::Status RemoveGroup(grpc::ServerContext* ctx, const v1::RemoveGroupRequest* req,
                           v1::RemoveGroupResponse* resp) override;
  // Keyspaces (admin_keyspaces.cc).
  grpc::Status CreateKeyspace(grpc::ServerContext* ctx, const v1::CreateKeyspaceRequest* req,
                              v1::KeyspaceInfo* resp) override;
  grpc::Status ListKeyspaces(grpc::ServerContext* ctx, const v1::ListKeyspacesRequest* req,
                             v1::ListKeyspacesResponse* resp) override;
  grpc::Status DescribeKeyspace(grpc::ServerContext* ctx, const v1::DescribeKeyspaceRequest* req,
                                v1::KeyspaceInfo* resp) override;
  grpc::Status DropKeyspace(grpc::ServerContext* ctx, const v1::DropKeyspaceRequest* req,
                            v1::DropKeyspaceResponse* resp) override;
  grpc::Status SplitShard(grpc::ServerContext* ctx, const v1::SplitShardRequest* req,
                          v1::SplitShardResponse* resp) override;
  grpc::Status MergeShard(grpc::ServerContext* ctx, const v1::MergeShardRequest* req,
                          v1::MergeShardResponse* resp) override;
  // Replica moves (admin_moves.cc).
  grpc::Status MoveReplica(grpc::ServerContext* ctx, const v1::MoveReplicaRequest* req,
                           v1::MoveReplicaResponse* resp) override;
  // The move itself, on this node as the shard's leader (also the rebalancer's); the voters
  // after it.
  absl::StatusOr<std::vector<uint64_t>> MoveReplicaHere(uint64_t shard, uint64_t from, uint64_t to);
  grpc::Status DrainNode(grpc::ServerContext* ctx, const v1::DrainNodeRequest* req,
                         v1::DrainNodeResponse* resp) override;
  grpc::Status Rebalance(grpc::ServerContext* ctx, const v1::RebalanceRequest* req,
                         v1::RebalanceStatus* resp) override;
  void SetRebalancer(const class Rebalancer* rebalancer) { rebalancer_ = rebalancer; }
  // Shutdown: moves in progress give up at their next step.
  void Stop() { stopping_.store(true); }
  // Backups (admin_backup.cc).
  grpc::Status BackupShard(grpc::ServerContext* ctx, const v1::BackupShardRequest* req,
                           grpc::ServerWriter<v1::BackupShardChunk>* writer) override;

 private:
  // The keyspace as this node knows it, with its shards (and their leaders and sizes where this
  // node hosts them).
  v1::KeyspaceInfo Describe(const internal::KeyspaceRecord& record) const;
  // Whether a shard hosted here holds any key (an eventual read on its replica); nullopt when
  // this node hosts no replica of it.
  std::optional<bool> ShardHasKeys(uint64_t group_id) const;

  grpc::Status ChangeMembership(grpc::ServerContext* ctx, const raftpb::ConfChange& cc,
                                v1::MembershipResponse* resp);

  absl::StatusOr<uint64_t> ChangeOneGroup(uint64_t group_id, const raftpb::ConfChange& cc,
                                          absl::Time deadline);

  RaftDriver* const driver_;
  const std::vector<uint64_t> group_ids_;
  const uint64_t group_id_;  // the data group: status and leadership transfer
  const uint64_t cluster_id_;
  const Authenticator* const auth_;
  Replica* const metadata_group_;
  const ClusterMetadata* const metadata_;
  ShardSplitter* const splitter_;
  ShardMerger* const merger_;
  const class Rebalancer* rebalancer_ = nullptr;
  std::atomic<bool> stopping_{false};
  // Proposes a system key through the metadata group and waits for it to apply.
  absl::Status PutMetadata(const std::string& key, const std::string& value);
};

}  // namespace kv::server
