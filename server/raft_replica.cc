#include "server/raft_replica.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kv::server {

RaftReplica::RaftReplica(RaftDriver* driver, MessageSink* transport, KvStateMachine* state_machine,
                         uint64_t group_id)
    : driver_(driver), transport_(transport), state_machine_(state_machine), group_id_(group_id) {}

void RaftReplica::ProposeWrite(internal::Command command, v1::WriteConsistency consistency,
                               absl::Time deadline, WriteDone done) {
  uint64_t leader = driver_->LeaderId(group_id_);
  if (driver_->IsLeader(group_id_) || leader == 0 || leader == driver_->node_id()) {
    // Leader (or no leader known yet: the driver answers UNAVAILABLE and the client retries).
    driver_->Propose(group_id_, std::move(command), consistency, deadline, std::move(done));
    return;
  }
  raftpb::ForwardRequest req;
  req.set_group_id(group_id_);
  req.set_command(command.SerializeAsString());
  req.set_write_consistency(consistency);
  if (deadline == absl::InfiniteFuture()) deadline = absl::Now() + absl::Seconds(30);
  transport_->Forward(
      leader, std::move(req), deadline,
      // By value: the answer may arrive after this replica object is gone.
      [node = driver_->node_id(), group = group_id_,
       done = std::move(done)](absl::StatusOr<raftpb::ForwardResponse> resp) {
        if (!resp.ok() && absl::IsPermissionDenied(resp.status()) &&
            resp.status().message().find("is not a member of group") != std::string_view::npos) {
          // This replica was removed (a move) and the routing map does not say
          // so yet: the client retries, and is then sent to the new replicas.
          done(absl::UnavailableError(absl::StrCat(
              "node ", node, " no longer holds a replica of shard ", group, " (it moved); retry")));
          return;
        }
        if (!resp.ok()) {
          done(resp.status());
          return;
        }
        WriteOutcome outcome;
        outcome.index = resp->index();
        if (!outcome.result.ParseFromString(resp->result())) {
          done(absl::InternalError("malformed answer from the leader"));
          return;
        }
        done(outcome);
      });
}

void RaftReplica::ReadBarrier(const ReadRequirement& requirement, ReadReady ready) {
  driver_->Read(group_id_, requirement, std::move(ready));
}

}  // namespace kv::server
