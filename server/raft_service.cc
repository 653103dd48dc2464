#include "server/raft_service.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "server/logging.h"
#include "server/metadata.h"
#include "sharding/keyspace.h"

namespace kv::server {
namespace {

// Senders use 1 MiB chunks; anything much larger is not from a kvd.
constexpr size_t kMaxSnapshotChunkBytes = 4 << 20;

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

absl::Status ValidateForwardedCommand(const internal::Command& command, uint64_t group_id,
                                      uint64_t system_group_id, const RequestLimits& limits) {
  switch (command.op_case()) {
    case internal::Command::kPut:
      if (auto s = ValidateKey(command.put().key(), limits); !s.ok()) return s;
      return ValidateValue(command.put().value(), limits);
    case internal::Command::kDel:
      return ValidateKey(command.del().key(), limits);
    case internal::Command::kCas:
      if (auto s = ValidateKey(command.cas().key(), limits); !s.ok()) return s;
      if (command.cas().expect_absent() && command.cas().expected_version() != 0) {
        return absl::InvalidArgumentError("cas: expect_absent excludes expected_version");
      }
      return ValidateValue(command.cas().value(), limits);
    case internal::Command::kSystemPut:
      if (group_id != system_group_id) {
        return absl::PermissionDeniedError(
            "system commands are refused outside the metadata group");
      }
      if (command.system_put().key().empty() || command.system_put().key().size() > 256 ||
          command.system_put().value().size() > (64 << 10)) {
        return absl::InvalidArgumentError("system command out of bounds");
      }
      return absl::OkStatus();
    case internal::Command::kCreateGroups: {
      if (group_id != system_group_id) {
        return absl::PermissionDeniedError(
            "system commands are refused outside the metadata group");
      }
      const auto& groups = command.create_groups().groups();
      if (groups.empty() || groups.size() > kMaxGroupsPerCreate) {
        return absl::InvalidArgumentError("create groups: 1 to 1000 groups at a time");
      }
      for (const auto& g : groups) {
        if (auto s = ValidateNewGroup(g); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    case internal::Command::kCreateKeyspace:
      if (group_id != system_group_id) {
        return absl::PermissionDeniedError(
            "system commands are refused outside the metadata group");
      }
      return ValidateNewKeyspace(command.create_keyspace());
    case internal::Command::kSplit:
      // Deterministic checks (generation, span) happen as it applies; here only the bounds.
      if (group_id == system_group_id ||
          command.split().child_group_id() < kFirstAllocatedGroupId ||
          command.split().split_key().size() > limits.max_key_bytes + 16) {
        return absl::InvalidArgumentError("split: bad child group or split key");
      }
      return absl::OkStatus();
    case internal::Command::kFreeze:
    case internal::Command::kThaw:
    case internal::Command::kMerge:
    case internal::Command::kAbortMerge: {
      // A shard's own merge steps; their checks happen as they apply. Here only the bounds.
      size_t voters = command.has_freeze()  ? command.freeze().voters_size()
                      : command.has_merge() ? command.merge().voters_size()
                                            : 0;
      size_t span_bytes = command.has_merge() ? command.merge().absorbed_span_start().size() +
                                                    command.merge().absorbed_span_end().size()
                                              : 0;
      if (group_id == system_group_id || voters > 16 ||
          span_bytes > 2 * (limits.max_key_bytes + 16)) {
        return absl::InvalidArgumentError("merge step out of bounds");
      }
      return absl::OkStatus();
    }
    case internal::Command::kReserveGroupIds:
      if (group_id != system_group_id) {
        return absl::PermissionDeniedError(
            "system commands are refused outside the metadata group");
      }
      if (command.reserve_group_ids().count() == 0 ||
          command.reserve_group_ids().count() > kMaxGroupsPerCreate) {
        return absl::InvalidArgumentError("reserve group ids: 1 to 1000 at a time");
      }
      return absl::OkStatus();
    case internal::Command::kDropKeyspace:
      if (group_id != system_group_id) {
        return absl::PermissionDeniedError(
            "system commands are refused outside the metadata group");
      }
      if (command.drop_keyspace().group_ids_size() > kMaxGroupsPerCreate * 64) {
        return absl::InvalidArgumentError("drop keyspace: too many groups");
      }
      return sharding::ValidateKeyspaceName(command.drop_keyspace().name());
    case internal::Command::OP_NOT_SET:
      return absl::InvalidArgumentError("forwarded command has no operation");
  }
  return absl::InvalidArgumentError("forwarded command of an unknown kind");
}

RaftService::RaftService(RaftDriver* driver, RaftServiceOptions options,
                         const PeerAuthenticator* auth, ControlState* control)
    : driver_(driver), options_(std::move(options)), auth_(auth), control_(control) {}

absl::Status RaftService::CheckPeer(grpc::CallbackServerContext* ctx, uint64_t cluster_id,
                                    uint64_t from) const {
  // Who first: an unauthenticated caller learns nothing about this cluster.
  if (auto s = auth_->Check(*ctx, from); !s.ok()) {
    driver_->NotePeerRefused();
    return s;
  }
  if (cluster_id != options_.cluster_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("peer belongs to cluster ", cluster_id, "; this node is in cluster ",
                     options_.cluster_id, " (check --cluster-name)"));
  }
  if (from == driver_->node_id()) {
    return absl::InvalidArgumentError("peer message claims to come from this node");
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* RaftService::Send(grpc::CallbackServerContext* ctx,
                                            const raftpb::MessageBatch* batch, raftpb::BatchAck*) {
  if (auto s = CheckPeer(ctx, batch->cluster_id(), batch->from_node()); !s.ok()) {
    return FinishNow(ctx, s);
  }
  if (batch->messages_size() == 0) return FinishNow(ctx, absl::OkStatus());
  // A sender that is not a member of a group it writes to learns so (and nothing is delivered);
  // finer checks (each message's sender and receiver) happen on the driver thread.
  uint64_t checked_group = UINT64_MAX;
  for (const auto& m : batch->messages()) {
    if (m.group_id() == checked_group) continue;
    // Liveness beats, and messages for groups not hosted here (the driver answers those so the
    // sender learns the replica is gone), pass on; the driver checks them.
    if (m.group_id() != kNodeLivenessGroup &&
        driver_->board().Refuses(m.group_id(), batch->from_node(), auth_->certified())) {
      driver_->NotePeerRefused();
      return FinishNow(
          ctx, absl::PermissionDeniedError(absl::StrCat(
                   "node ", batch->from_node(), " is not a member of group ", m.group_id())));
    }
    checked_group = m.group_id();
  }
  std::vector<raftpb::Message> messages(batch->messages().begin(), batch->messages().end());
  driver_->Deliver(batch->from_node(), auth_->certified(), batch->from_client_address(),
                   std::move(messages));
  return FinishNow(ctx, absl::OkStatus());
}

void RaftService::ExpireIdleSnapshots() {
  absl::MutexLock lock(&mu_);
  ExpireIdleSnapshotsLocked(absl::Now());
}

void RaftService::ExpireIdleSnapshotsLocked(absl::Time now) {
  // Streams a peer abandoned (it crashed, lost leadership, was cut off) must not pin memory.
  for (auto it = incoming_.begin(); it != incoming_.end();) {
    if (now - it->second.last_chunk > options_.snapshot_idle) {
      it = incoming_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::Status RaftService::AcceptChunk(const raftpb::SnapshotChunk& chunk,
                                      std::unique_ptr<ReceivedSnapshot>* complete) {
  absl::MutexLock lock(&mu_);
  absl::Time now = absl::Now();
  ExpireIdleSnapshotsLocked(now);
  const std::pair<uint64_t, uint64_t> stream{chunk.from_node(), chunk.group_id()};
  if (chunk.data().size() > kMaxSnapshotChunkBytes) {
    incoming_.erase(stream);
    return absl::InvalidArgumentError(absl::StrCat("snapshot chunk of ", chunk.data().size(),
                                                   " bytes exceeds ", kMaxSnapshotChunkBytes));
  }
  IncomingSnapshot& in = incoming_[stream];
  if (chunk.offset() == 0) {
    auto sink = driver_->OpenSnapshotSink(chunk.group_id(), chunk.from_node());
    if (!sink.ok()) {
      incoming_.erase(stream);
      return sink.status();
    }
    in = IncomingSnapshot{chunk.snapshot_id(), 0, *std::move(sink), now};
  }
  if (!in.sink || in.snapshot_id != chunk.snapshot_id() || in.offset != chunk.offset()) {
    incoming_.erase(stream);
    return absl::AbortedError("snapshot chunk out of order; restart the stream");
  }
  if (in.offset + chunk.data().size() > options_.max_snapshot_bytes) {
    incoming_.erase(stream);
    return absl::ResourceExhaustedError(
        absl::StrCat("snapshot larger than --max-snapshot-bytes ", options_.max_snapshot_bytes));
  }
  // Disk writes under the lock: streams are few, and one stream's chunks arrive one at a time.
  if (auto s = in.sink->Append(chunk.data()); !s.ok()) {
    incoming_.erase(stream);
    return s;
  }
  in.offset += chunk.data().size();
  in.last_chunk = now;
  if (!chunk.last()) return absl::OkStatus();
  auto received = in.sink->Finish();
  incoming_.erase(stream);
  if (!received.ok()) return received.status();
  *complete = *std::move(received);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* RaftService::SendSnapshot(grpc::CallbackServerContext* ctx,
                                                    const raftpb::SnapshotChunk* chunk,
                                                    raftpb::SnapshotAck*) {
  if (auto s = CheckPeer(ctx, chunk->cluster_id(), chunk->from_node()); !s.ok()) {
    return FinishNow(ctx, s);
  }
  if (chunk->last()) {
    const raftpb::Message& m = chunk->message();
    // Its `from` may name the leader a delegate streams for; the driver checks who may.
    if (m.type() != raftpb::MSG_SNAPSHOT || m.group_id() != chunk->group_id() ||
        m.to() != driver_->node_id()) {
      return FinishNow(ctx, absl::InvalidArgumentError(
                                "the last snapshot chunk must carry the MSG_SNAPSHOT of its "
                                "group and receiver"));
    }
  }
  // Buffered bytes are bounded per sender, so only members may have a buffer at all.
  if (!driver_->MayReceiveFrom(chunk->group_id(), chunk->from_node(), auth_->certified())) {
    return FinishNow(
        ctx, absl::PermissionDeniedError(absl::StrCat(
                 "node ", chunk->from_node(), " is not a member of group ", chunk->group_id())));
  }
  std::unique_ptr<ReceivedSnapshot> complete;
  if (auto s = AcceptChunk(*chunk, &complete); !s.ok()) {
    if (absl::IsDataLoss(s)) {
      logging::Warning(logging::Group{chunk->group_id()}, "refused a snapshot from node {}: {}",
                       chunk->from_node(), s.ToString());
    }
    return FinishNow(ctx, s);
  }
  if (chunk->last())
    driver_->DeliverSnapshot(chunk->from_node(), auth_->certified(), chunk->message(),
                             std::move(complete));
  return FinishNow(ctx, absl::OkStatus());
}

void ServeForwardedWrite(RaftDriver* driver, const raftpb::ForwardRequest& req, uint64_t from,
                         const ForwardRules& rules, absl::Time deadline,
                         MessageSink::ForwardDone done) {
  internal::Command command;
  if (!command.ParseFromString(req.command())) {
    return done(absl::InvalidArgumentError("malformed command"));
  }
  if (auto s =
          ValidateForwardedCommand(command, req.group_id(), rules.system_group_id, rules.limits);
      !s.ok()) {
    return done(s);
  }
  auto level = static_cast<v1::WriteConsistency>(req.write_consistency());
  if (level != v1::WRITE_MAJORITY && level != v1::WRITE_ALL) {
    return done(absl::InvalidArgumentError("unknown write consistency"));
  }
  if (!driver->IsMemberOf(req.group_id(), from)) {
    return done(absl::PermissionDeniedError(
        absl::StrCat("node ", from, " is not a member of group ", req.group_id())));
  }
  // The node that received the write admitted it; the leader may already have applied a kill
  // switch that node has not. System writes (the kill switch itself) always pass.
  if (rules.control && command.op_case() != internal::Command::kSystemPut) {
    if (auto s = rules.control->CheckKillSwitch(true); !s.ok()) return done(s);
  }
  driver->Propose(req.group_id(), std::move(command), level, deadline,
                  [done = std::move(done)](absl::StatusOr<WriteOutcome> outcome) {
                    if (!outcome.ok()) return done(outcome.status());
                    raftpb::ForwardResponse resp;
                    resp.set_result(outcome->result.SerializeAsString());
                    resp.set_index(outcome->index);
                    done(std::move(resp));
                  });
}

grpc::ServerUnaryReactor* RaftService::Forward(grpc::CallbackServerContext* ctx,
                                               const raftpb::ForwardRequest* req,
                                               raftpb::ForwardResponse* resp) {
  if (auto s = CheckPeer(ctx, req->cluster_id(), req->from_node()); !s.ok()) {
    return FinishNow(ctx, s);
  }
  auto* reactor = ctx->DefaultReactor();
  auto d = ctx->deadline();
  absl::Time deadline = d == std::chrono::system_clock::time_point::max()
                            ? absl::Now() + absl::Seconds(30)
                            : std::min(absl::FromChrono(d), absl::Now() + absl::Seconds(60));
  ServeForwardedWrite(driver_, *req, req->from_node(),
                      ForwardRules{options_.system_group_id, options_.limits, control_}, deadline,
                      [reactor, resp](absl::StatusOr<raftpb::ForwardResponse> answer) {
                        if (answer.ok()) *resp = *std::move(answer);
                        reactor->Finish(ToGrpcStatus(answer.status()));
                      });
  return reactor;
}

}  // namespace kv::server
