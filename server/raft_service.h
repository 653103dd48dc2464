// RaftService: the receiving side of node-to-node traffic (kv.raftpb.RaftTransport): message
// batches into the driver, snapshot chunks reassembled and handed over whole, and writes that
// followers forward to this node as leader. Refuses traffic from another cluster id.
#pragma once

#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "kvstore/v1/raft_service.grpc.pb.h"
#include "server/control_state.h"
#include "server/raft_driver.h"

namespace kv::server {

class RaftService final : public raftpb::RaftTransport::CallbackService {
 public:
  // `control` (optional): forwarded client writes also obey the kill switch as applied here.
  RaftService(RaftDriver* driver, uint64_t cluster_id, ControlState* control = nullptr);

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* ctx,
                                 const raftpb::MessageBatch* batch, raftpb::BatchAck* ack) override;
  grpc::ServerUnaryReactor* SendSnapshot(grpc::CallbackServerContext* ctx,
                                         const raftpb::SnapshotChunk* chunk,
                                         raftpb::SnapshotAck* ack) override;
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* ctx,
                                    const raftpb::ForwardRequest* req,
                                    raftpb::ForwardResponse* resp) override;

 private:
  bool WrongCluster(uint64_t cluster_id, grpc::CallbackServerContext* ctx,
                    grpc::ServerUnaryReactor** reactor);

  RaftDriver* const driver_;
  const uint64_t cluster_id_;
  ControlState* const control_;
  absl::Mutex mu_;
  // Snapshot being received, per sender: (snapshot id, bytes so far).
  std::map<uint64_t, std::pair<uint64_t, std::string>> incoming_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kv::server
