// AdminService: node drains and the rebalancer's switch and status (server/rebalancer.h).
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/rebalancer.h"

namespace kv::server {

absl::Status AdminService::PutMetadata(const std::string& key, const std::string& value) {
  internal::Command cmd;
  cmd.mutable_system_put()->set_key(key);
  cmd.mutable_system_put()->set_value(value);
  auto done = std::make_shared<std::promise<absl::Status>>();
  auto future = done->get_future();
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  metadata_group_->ProposeWrite(std::move(cmd), v1::WRITE_MAJORITY, deadline,
                                [done](absl::StatusOr<WriteOutcome> r) {
                                  done->set_value(r.ok() ? absl::OkStatus() : r.status());
                                });
  if (future.wait_until(absl::ToChronoTime(deadline + absl::Seconds(1))) !=
      std::future_status::ready) {
    return absl::DeadlineExceededError("the metadata group did not answer in time");
  }
  return future.get();
}

grpc::Status AdminService::DrainNode(grpc::ServerContext* ctx, const v1::DrainNodeRequest* req,
                                     v1::DrainNodeResponse* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  auto node = metadata_->Node(req->node_id());
  if (!node) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no node ", req->node_id(), " (kvctl node list)"));
  }
  if (node->state() == internal::NodeRecord::REMOVED) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("node ", req->node_id(), " was removed"));
  }
  auto want = req->undo() ? internal::NodeRecord::UP : internal::NodeRecord::DRAINING;
  if (node->state() != want) {
    internal::NodeRecord record = *node;
    record.set_state(want);
    if (auto s = PutMetadata(NodeKey(record.node_id()), record.SerializeAsString()); !s.ok()) {
      return ToGrpcStatus(s);
    }
  }
  resp->set_state(want == internal::NodeRecord::UP ? "up" : "draining");
  for (const auto& d : metadata_->Groups()) {
    if (d.span_end().empty()) continue;
    bool here = false;
    for (uint64_t v : d.voters()) here = here || v == req->node_id();
    for (uint64_t l : d.learners()) here = here || l == req->node_id();
    if (!here) continue;
    resp->set_replicas_left(resp->replicas_left() + 1);
    if (driver_->LeaderId(d.group_id()) == req->node_id()) {
      resp->set_leaders_left(resp->leaders_left() + 1);
    }
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::Rebalance(grpc::ServerContext* ctx, const v1::RebalanceRequest* req,
                                     v1::RebalanceStatus* resp) {
  if (req->action() != v1::RebalanceRequest::STATUS) {
    if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
    bool pause = req->action() == v1::RebalanceRequest::PAUSE;
    if (auto s = PutMetadata(kRebalanceKey, pause ? "paused" : "running"); !s.ok()) {
      return ToGrpcStatus(s);
    }
    // Answer once this node applied it too, so the status below shows it.
    for (int i = 0; i < 200 && metadata_->RebalancePaused() != pause; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  if (!rebalancer_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the rebalancer is not running here");
  }
  Rebalancer::Status s = rebalancer_->GetStatus();
  resp->set_paused(s.paused);
  resp->set_moves_done(s.moves_done);
  resp->set_moving(s.moving ? 1 : 0);
  resp->set_last_error(s.last_error);
  resp->set_leader_transfers(s.leader_transfers);
  resp->set_nodes_down(s.nodes_down);
  for (const auto& m : s.plan.moves) {
    auto* p = resp->add_pending();
    p->set_shard_id(m.shard_id);
    p->set_from_node(m.from);
    p->set_to_node(m.to);
    p->set_reason(m.reason);
  }
  for (const auto& u : s.plan.unplaceable) {
    auto* p = resp->add_unplaceable();
    p->set_shard_id(u.shard_id);
    p->set_stuck_on(u.stuck_on);
    p->set_reason(u.reason);
  }
  return grpc::Status::OK;
}

}  // namespace kv::server
