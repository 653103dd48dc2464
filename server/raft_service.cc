#include "server/raft_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"

namespace kv::server {

RaftService::RaftService(RaftDriver* driver, uint64_t cluster_id, ControlState* control)
    : driver_(driver), cluster_id_(cluster_id), control_(control) {}

bool RaftService::WrongCluster(uint64_t cluster_id, grpc::CallbackServerContext* ctx,
                               grpc::ServerUnaryReactor** reactor) {
  if (cluster_id == cluster_id_) return false;
  *reactor = ctx->DefaultReactor();
  (*reactor)->Finish(grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION,
      absl::StrCat("peer belongs to cluster ", cluster_id, "; this node is in cluster ",
                   cluster_id_, " (check --cluster-name)")));
  return true;
}

grpc::ServerUnaryReactor* RaftService::Send(grpc::CallbackServerContext* ctx,
                                            const raftpb::MessageBatch* batch, raftpb::BatchAck*) {
  grpc::ServerUnaryReactor* reactor = nullptr;
  if (WrongCluster(batch->cluster_id(), ctx, &reactor)) return reactor;
  std::vector<raftpb::Message> messages(batch->messages().begin(), batch->messages().end());
  driver_->Deliver(std::move(messages));
  reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RaftService::SendSnapshot(grpc::CallbackServerContext* ctx,
                                                    const raftpb::SnapshotChunk* chunk,
                                                    raftpb::SnapshotAck*) {
  grpc::ServerUnaryReactor* reactor = nullptr;
  if (WrongCluster(chunk->cluster_id(), ctx, &reactor)) return reactor;
  reactor = ctx->DefaultReactor();
  std::string complete;
  bool done = false;
  {
    absl::MutexLock lock(&mu_);
    auto& [id, data] = incoming_[chunk->from_node()];
    if (chunk->offset() == 0) {
      id = chunk->snapshot_id();
      data.clear();
    }
    if (id != chunk->snapshot_id() || data.size() != chunk->offset()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::ABORTED, "snapshot chunk out of order"));
      return reactor;
    }
    data.append(chunk->data());
    if (chunk->last()) {
      complete.swap(data);
      incoming_.erase(chunk->from_node());
      done = true;
    }
  }
  if (done) driver_->DeliverSnapshot(chunk->message(), std::move(complete));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RaftService::Forward(grpc::CallbackServerContext* ctx,
                                               const raftpb::ForwardRequest* req,
                                               raftpb::ForwardResponse* resp) {
  grpc::ServerUnaryReactor* reactor = nullptr;
  if (WrongCluster(req->cluster_id(), ctx, &reactor)) return reactor;
  reactor = ctx->DefaultReactor();
  internal::Command command;
  if (!command.ParseFromString(req->command())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed command"));
    return reactor;
  }
  // The node that received the write admitted it; the leader may already have applied a kill
  // switch that node has not. System writes (the kill switch itself) always pass.
  if (control_ && command.op_case() != internal::Command::kSystemPut) {
    if (auto s = control_->CheckKillSwitch(true); !s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return reactor;
    }
  }
  auto d = ctx->deadline();
  absl::Time deadline = d == std::chrono::system_clock::time_point::max()
                            ? absl::Now() + absl::Seconds(30)
                            : absl::FromChrono(d);
  driver_->Propose(req->group_id(), std::move(command),
                   static_cast<v1::WriteConsistency>(req->write_consistency()), deadline,
                   [reactor, resp](absl::StatusOr<WriteOutcome> outcome) {
                     if (outcome.ok()) {
                       resp->set_result(outcome->result.SerializeAsString());
                       resp->set_index(outcome->index);
                     }
                     reactor->Finish(ToGrpcStatus(outcome.status()));
                   });
  return reactor;
}

}  // namespace kv::server
