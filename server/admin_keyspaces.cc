// AdminService's keyspace calls: create, list, describe and drop keyspaces.
#include <algorithm>
#include <future>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/key_router.h"
#include "server/raft_replica.h"
#include "server/system_command.h"
#include "sharding/key_codec.h"
#include "sharding/key_range.h"

namespace kv::server {
namespace {

grpc::Status Refused(grpc::StatusCode code, std::string message) {
  return grpc::Status(code, std::move(message));
}

// A span boundary as a person reads it: a user key, or a slot number for hash keyspaces.
std::string Readable(const sharding::Keyspace& ks, const std::string& boundary) {
  if (boundary == sharding::KeyspaceBegin(ks.id)) {
    return ks.strategy == sharding::Strategy::kHash ? "0" : "";
  }
  if (boundary == sharding::KeyspaceEnd(ks.id)) {
    return ks.strategy == sharding::Strategy::kHash ? std::to_string(sharding::kSlots) : "";
  }
  if (ks.strategy == sharding::Strategy::kHash && boundary.size() >= 10) {
    return std::to_string((static_cast<unsigned char>(boundary[8]) << 8) |
                          static_cast<unsigned char>(boundary[9]));
  }
  sharding::Keyspace as_range = ks;
  as_range.strategy = sharding::Strategy::kRange;
  auto user = sharding::DecodeKey(as_range, boundary);
  return user.ok() ? std::string(*user) : "?";
}

}  // namespace

v1::KeyspaceInfo AdminService::Describe(const internal::KeyspaceRecord& record) const {
  sharding::Keyspace ks = KeyspaceOf(record);
  v1::KeyspaceInfo info;
  info.set_id(record.id());
  info.set_name(record.name());
  info.set_strategy(sharding::StrategyName(ks.strategy));
  for (const auto& r : record.regions()) info.add_regions(r);
  info.set_replicas(record.replicas());
  for (const auto& d : metadata_->ShardsOf(record.id())) {
    auto* s = info.add_shards();
    s->set_shard_id(d.group_id());
    s->set_start(Readable(ks, d.span_start()));
    s->set_end(Readable(ks, d.span_end()));
    for (uint64_t v : d.voters()) s->add_replicas(v);
    s->set_generation(d.epoch().generation());
    s->set_conf_version(d.epoch().conf_version());
    if (ks.strategy == sharding::Strategy::kGeo) {
      if (auto region = sharding::RegionOf(s->start())) s->set_region(std::string(*region));
    }
    GroupStatus status = driver_->Status(d.group_id());
    s->set_leader_id(status.leader_id);
    s->set_approximate_bytes(driver_->engine()->ApproximateSpanBytes(d.span_start(), d.span_end()));
  }
  return info;
}

grpc::Status AdminService::CreateKeyspace(grpc::ServerContext* ctx,
                                          const v1::CreateKeyspaceRequest* req,
                                          v1::KeyspaceInfo* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (auto s = sharding::ValidateKeyspaceName(req->name()); !s.ok()) return ToGrpcStatus(s);
  if (req->name() == sharding::kDefaultKeyspaceName || metadata_->Keyspace(req->name())) {
    return Refused(grpc::StatusCode::ALREADY_EXISTS,
                   absl::StrCat("keyspace '", req->name(), "' exists"));
  }
  auto strategy = sharding::ParseStrategy(req->strategy().empty() ? "range" : req->strategy());
  if (!strategy.ok()) return ToGrpcStatus(strategy.status());
  sharding::Keyspace ks;
  ks.id = 0;  // the spans are computed for keyspace 0 and moved to the id given at apply
  ks.name = req->name();
  ks.strategy = *strategy;
  ks.regions.assign(req->regions().begin(), req->regions().end());
  std::sort(ks.regions.begin(), ks.regions.end());
  if (ks.strategy != sharding::Strategy::kGeo && !ks.regions.empty()) {
    return Refused(grpc::StatusCode::INVALID_ARGUMENT, "--regions is for geo keyspaces");
  }
  if (ks.strategy != sharding::Strategy::kRange && req->split_points_size() > 0) {
    return Refused(grpc::StatusCode::INVALID_ARGUMENT, "--split-points is for range keyspaces");
  }
  uint32_t shards = req->shards() == 0 ? 8 : req->shards();
  if (ks.strategy == sharding::Strategy::kHash &&
      shards > static_cast<uint32_t>(kMaxGroupsPerCreate)) {
    return Refused(grpc::StatusCode::INVALID_ARGUMENT,
                   absl::StrCat("a hash keyspace starts with at most ", kMaxGroupsPerCreate,
                                " shards (it splits as it grows)"));
  }
  std::vector<std::string> split_points(req->split_points().begin(), req->split_points().end());
  auto spans = sharding::InitialSpans(ks, shards, split_points);
  if (!spans.ok()) return ToGrpcStatus(spans.status());
  if (spans->size() > static_cast<size_t>(kMaxGroupsPerCreate)) {
    return Refused(grpc::StatusCode::INVALID_ARGUMENT,
                   absl::StrCat("at most ", kMaxGroupsPerCreate, " shards at creation"));
  }
  // Nodes that can hold replicas, per region (geo) or all together.
  std::map<std::string, std::vector<uint64_t>> up_by_region;
  std::vector<uint64_t> up;
  for (const auto& n : metadata_->Nodes()) {
    if (n.state() != internal::NodeRecord::UP) continue;
    up.push_back(n.node_id());
    up_by_region[n.region()].push_back(n.node_id());
  }
  uint32_t voters = static_cast<uint32_t>(driver_->Status(kMetadataGroupId).conf.voters_size());
  uint32_t replicas = req->replicas() == 0 ? std::clamp<uint32_t>(voters, 1, 3) : req->replicas();
  if (replicas == 0 || replicas > static_cast<uint32_t>(kMaxReplicasPerGroup)) {
    return Refused(grpc::StatusCode::INVALID_ARGUMENT,
                   absl::StrCat("--replicas is 1 to ", kMaxReplicasPerGroup));
  }
  internal::Command cmd;
  auto* op = cmd.mutable_create_keyspace();
  op->mutable_keyspace()->set_name(ks.name);
  op->mutable_keyspace()->set_strategy(static_cast<uint32_t>(ks.strategy));
  for (const auto& r : ks.regions) op->mutable_keyspace()->add_regions(r);
  op->mutable_keyspace()->set_replicas(replicas);
  op->mutable_keyspace()->set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
  size_t offset = metadata_->Groups().size();
  for (size_t i = 0; i < spans->size(); ++i) {
    const sharding::KeyRange& span = (*spans)[i];
    // A geo shard's replicas all sit in its region; nothing is placed elsewhere to make up
    // numbers.
    const std::vector<uint64_t>* candidates = &up;
    if (ks.strategy == sharding::Strategy::kGeo) {
      const std::string& region = ks.regions[i];
      candidates = &up_by_region[region];
      if (candidates->size() < replicas) {
        return Refused(grpc::StatusCode::FAILED_PRECONDITION,
                       absl::StrCat("region '", region, "' has ", candidates->size(),
                                    " node(s) up with --region=", region, "; ", replicas,
                                    " replicas need as many"));
      }
    } else if (candidates->size() < replicas) {
      return Refused(grpc::StatusCode::FAILED_PRECONDITION,
                     absl::StrCat(replicas, " replicas wanted but ", candidates->size(),
                                  " node(s) are up and registered; retry once they are"));
    }
    auto* d = op->add_groups();
    d->mutable_epoch()->set_generation(1);
    d->mutable_epoch()->set_conf_version(1);
    d->set_strategy(static_cast<uint32_t>(ks.strategy));
    for (const auto& r : ks.regions) d->add_regions(r);
    d->set_span_start(span.start);
    d->set_span_end(span.end);
    for (uint32_t r = 0; r < replicas; ++r) {
      d->add_voters((*candidates)[(offset + i + r) % candidates->size()]);
    }
  }
  if (auto s = ValidateNewKeyspace(*op); !s.ok()) return ToGrpcStatus(s);
  auto outcome = ProposeSystemCommand(metadata_group_, cmd, absl::Now() + absl::Seconds(10));
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  if (!outcome->result.succeeded()) {
    return Refused(grpc::StatusCode::ALREADY_EXISTS,
                   absl::StrCat("keyspace '", req->name(), "' exists"));
  }
  if (auto record = metadata_->Keyspace(req->name())) *resp = Describe(*record);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListKeyspaces(grpc::ServerContext*, const v1::ListKeyspacesRequest*,
                                         v1::ListKeyspacesResponse* resp) {
  auto* def = resp->add_keyspaces();
  def->set_id(sharding::kDefaultKeyspaceId);
  def->set_name(std::string(sharding::kDefaultKeyspaceName));
  def->set_strategy("range");
  auto* shard = def->add_shards();
  shard->set_shard_id(kDefaultDataGroupId);
  GroupStatus status = driver_->Status(kDefaultDataGroupId);
  for (const auto& m : status.conf.voters()) shard->add_replicas(m.id());
  def->set_replicas(static_cast<uint32_t>(status.conf.voters_size()));
  shard->set_leader_id(status.leader_id);
  for (const auto& record : metadata_->Keyspaces()) *resp->add_keyspaces() = Describe(record);
  return grpc::Status::OK;
}

grpc::Status AdminService::DescribeKeyspace(grpc::ServerContext* ctx,
                                            const v1::DescribeKeyspaceRequest* req,
                                            v1::KeyspaceInfo* resp) {
  v1::ListKeyspacesResponse all;
  ListKeyspaces(ctx, nullptr, &all);
  for (auto& k : *all.mutable_keyspaces()) {
    if (k.name() == req->name()) {
      *resp = std::move(k);
      return grpc::Status::OK;
    }
  }
  return Refused(grpc::StatusCode::NOT_FOUND, absl::StrCat("no keyspace '", req->name(), "'"));
}

std::optional<bool> AdminService::ShardHasKeys(uint64_t group_id) const {
  auto found = std::make_shared<std::promise<std::optional<bool>>>();
  ReadRequirement eventual;
  eventual.consistency = v1::READ_EVENTUAL;
  eventual.deadline = absl::Now() + absl::Seconds(5);
  RaftDriver* driver = driver_;
  driver_->Read(group_id, eventual, [found, driver, group_id](absl::Status ready) {
    // On the driver thread, where the replica cannot go away under the read.
    KvStateMachine* sm = ready.ok() ? driver->StateMachineOf(group_id) : nullptr;
    std::vector<ScanItem> items;
    bool more = false;
    std::string last;
    if (!sm || !sm->ScanFrom(sm->scope().span.start, "", "", 1, 1 << 16, true, &items, &more, &last)
                    .ok()) {
      found->set_value(std::nullopt);
      return;
    }
    found->set_value(!items.empty());
  });
  auto f = found->get_future();
  if (f.wait_for(std::chrono::seconds(6)) != std::future_status::ready) return std::nullopt;
  return f.get();
}

grpc::Status AdminService::DropKeyspace(grpc::ServerContext* ctx,
                                        const v1::DropKeyspaceRequest* req,
                                        v1::DropKeyspaceResponse*) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (req->name() == sharding::kDefaultKeyspaceName) {
    return Refused(grpc::StatusCode::INVALID_ARGUMENT, "the default keyspace cannot be dropped");
  }
  auto record = metadata_->Keyspace(req->name());
  if (!record) {
    return Refused(grpc::StatusCode::NOT_FOUND, absl::StrCat("no keyspace '", req->name(), "'"));
  }
  internal::Command cmd;
  auto* op = cmd.mutable_drop_keyspace();
  op->set_name(record->name());
  op->set_keyspace_id(record->id());
  for (const auto& d : metadata_->ShardsOf(record->id())) {
    op->add_group_ids(d.group_id());
    if (req->force()) continue;
    std::optional<bool> has_keys = ShardHasKeys(d.group_id());
    if (!has_keys) {
      return Refused(grpc::StatusCode::FAILED_PRECONDITION,
                     absl::StrCat("cannot tell from node ", driver_->node_id(), " whether shard ",
                                  d.group_id(), " is empty (no replica here); ask a node with ",
                                  "one, or drop with --force"));
    }
    if (*has_keys) {
      return Refused(grpc::StatusCode::FAILED_PRECONDITION,
                     absl::StrCat("keyspace '", req->name(),
                                  "' holds keys; delete them or drop with --force"));
    }
  }
  auto outcome = ProposeSystemCommand(metadata_group_, cmd, absl::Now() + absl::Seconds(10));
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  if (!outcome->result.succeeded()) {
    return Refused(grpc::StatusCode::NOT_FOUND, absl::StrCat("no keyspace '", req->name(), "'"));
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::SplitShard(grpc::ServerContext* ctx, const v1::SplitShardRequest* req,
                                      v1::SplitShardResponse* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (!splitter_) return Refused(grpc::StatusCode::UNIMPLEMENTED, "splits are off on this node");
  std::optional<std::string> at;
  if (req->has_at()) at = req->at();
  auto child = splitter_->Split(req->shard_id(), at, SplitReason::kCommand);
  if (!child.ok()) return ToGrpcStatus(child.status());
  resp->set_child_shard_id(*child);
  for (auto& k : metadata_->Keyspaces()) {
    for (const auto& d : metadata_->ShardsOf(k.id())) {
      if (d.group_id() == *child) *resp->mutable_keyspace() = Describe(k);
    }
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::MergeShard(grpc::ServerContext* ctx, const v1::MergeShardRequest* req,
                                      v1::MergeShardResponse* resp) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  if (!merger_) return Refused(grpc::StatusCode::UNIMPLEMENTED, "merges are off on this node");
  auto merged = merger_->Merge(req->shard_id());
  if (!merged.ok()) return ToGrpcStatus(merged.status());
  resp->set_survivor_shard_id(merged->survivor);
  resp->set_absorbed_shard_id(merged->absorbed);
  for (auto& k : metadata_->Keyspaces()) {
    for (const auto& d : metadata_->ShardsOf(k.id())) {
      if (d.group_id() == merged->survivor) *resp->mutable_keyspace() = Describe(k);
    }
  }
  return grpc::Status::OK;
}

}  // namespace kv::server
