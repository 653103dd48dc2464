#include "server/key_router.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/grpc_status.h"
#include "server/raft_replica.h"
#include "sharding/key_codec.h"

namespace kv::server {

sharding::Keyspace KeyspaceOf(const internal::KeyspaceRecord& record) {
  sharding::Keyspace ks;
  ks.id = record.id();
  ks.name = record.name();
  ks.strategy = static_cast<sharding::Strategy>(record.strategy());
  ks.regions.assign(record.regions().begin(), record.regions().end());
  return ks;
}

KeyRouter::KeyRouter(const ClusterMetadata* metadata, RaftDriver* driver, MessageSink* transport,
                     std::shared_ptr<Replica> default_replica)
    : metadata_(metadata),
      driver_(driver),
      transport_(transport),
      default_route_(std::make_shared<const ShardRoute>(
          ShardRoute{std::move(default_replica),
                     kDefaultDataGroupId,
                     0,
                     0,
                     sharding::Keyspace{},
                     {sharding::KeyspaceBegin(sharding::kDefaultKeyspaceId),
                      sharding::KeyspaceEnd(sharding::kDefaultKeyspaceId)},
                     v1::ShardHint{}})) {}

absl::StatusOr<sharding::Keyspace> KeyRouter::Resolve(std::string_view keyspace) const {
  if (keyspace.empty() || keyspace == sharding::kDefaultKeyspaceName) return sharding::Keyspace{};
  auto record = metadata_->Keyspace(keyspace);
  if (!record) {
    return absl::NotFoundError(
        absl::StrCat("no keyspace '", std::string(keyspace), "' (kvctl keyspace list shows them)"));
  }
  return KeyspaceOf(*record);
}

absl::StatusOr<RoutePtr> KeyRouter::Route(std::string_view keyspace, std::string_view user_key,
                                          const v1::RouteHint& asked) const {
  // The hot path: the default keyspace, no lookup and no allocation.
  if (keyspace.empty() || keyspace == sharding::kDefaultKeyspaceName) return default_route_;
  auto ks = Resolve(keyspace);
  if (!ks.ok()) return ks.status();
  if (ks->strategy == sharding::Strategy::kGeo) {
    auto region = sharding::RegionOf(user_key);
    if (!region) {
      return absl::InvalidArgumentError(
          absl::StrCat("a key of geo keyspace '", ks->name,
                       "' starts with its region and '/' (e.g. eu/user42)"));
    }
    if (std::find(ks->regions.begin(), ks->regions.end(), *region) == ks->regions.end()) {
      return absl::FailedPreconditionError(absl::StrCat("keyspace '", ks->name, "' has no region '",
                                                        std::string(*region), "' (it has ",
                                                        absl::StrJoin(ks->regions, ", "), ")"));
    }
  }
  return RouteShard(*ks, sharding::EncodeKey(*ks, user_key), asked);
}

absl::StatusOr<RoutePtr> KeyRouter::RouteEncoded(std::string_view keyspace,
                                                 std::string_view encoded,
                                                 const v1::RouteHint& asked) const {
  auto ks = Resolve(keyspace);
  if (!ks.ok()) return ks.status();
  if (ks->id == sharding::kDefaultKeyspaceId) return default_route_;
  if (encoded < sharding::KeyspaceBegin(ks->id) || encoded >= sharding::KeyspaceEnd(ks->id)) {
    return absl::InvalidArgumentError("scan: continuation_token does not belong to this keyspace");
  }
  return RouteShard(*ks, encoded, asked);
}

absl::StatusOr<RoutePtr> KeyRouter::RouteShard(const sharding::Keyspace& keyspace,
                                               std::string_view encoded,
                                               const v1::RouteHint& asked) const {
  const sharding::Keyspace* ks = &keyspace;
  auto shard = metadata_->ShardFor(encoded);
  if (!shard) {
    return absl::UnavailableError(
        absl::StrCat("no shard of keyspace '", ks->name, "' is known here yet; retry"));
  }
  v1::ShardHint hint;
  hint.set_shard_id(shard->group_id());
  hint.set_keyspace_id(ks->id);
  hint.set_strategy(static_cast<uint32_t>(ks->strategy));
  hint.set_span_start(shard->span_start());
  hint.set_span_end(shard->span_end());
  hint.set_generation(shard->epoch().generation());
  hint.set_conf_version(shard->epoch().conf_version());
  bool here = false;
  for (const auto* members : {&shard->voters(), &shard->learners()}) {
    for (uint64_t id : *members) {
      here = here || id == driver_->node_id();
      if (auto node = metadata_->Node(id); node && !node->client_address().empty()) {
        hint.add_replica_addresses(node->client_address());
      }
    }
  }
  if (!here) {
    // A typed redirect: the client learns where the shard is and goes there at once.
    absl::Status elsewhere = absl::FailedPreconditionError(absl::StrCat(
        "shard ", shard->group_id(), " of keyspace '", ks->name, "' has no replica on node ",
        driver_->node_id(), "; its replicas are on nodes ", absl::StrJoin(shard->voters(), ", ")));
    v1::Redirect redirect;
    redirect.set_reason(v1::Redirect::SHARD_ELSEWHERE);
    redirect.set_map_version(metadata_->RoutingVersion());
    *redirect.mutable_shard() = std::move(hint);
    elsewhere.SetPayload(kRedirectPayload, absl::Cord(redirect.SerializeAsString()));
    return elsewhere;
  }
  auto rerouted = v1::Redirect::REASON_UNSPECIFIED;
  if (asked.shard_id() == 0) {
    // No cache entry: nothing to correct.
  } else if (asked.shard_id() != shard->group_id()) {
    rerouted = metadata_->HasGroup(asked.shard_id()) ? v1::Redirect::KEY_NOT_IN_SHARD
                                                     : v1::Redirect::SHARD_GONE;
  } else if (asked.generation() < shard->epoch().generation() ||
             asked.conf_version() < shard->epoch().conf_version()) {
    rerouted = v1::Redirect::STALE_EPOCH;
  } else if (asked.to_leader() && !driver_->IsLeader(shard->group_id())) {
    rerouted = v1::Redirect::NOT_LEADER;
  }
  return std::make_shared<const ShardRoute>(
      ShardRoute{std::make_shared<RaftReplica>(driver_, transport_, nullptr, shard->group_id()),
                 shard->group_id(),
                 shard->split_from(),
                 shard->split_index(),
                 *ks,
                 {shard->span_start(), shard->span_end()},
                 std::move(hint),
                 rerouted});
}

absl::StatusOr<RoutePtr> KeyRouter::Reroute(std::string_view keyspace, std::string_view key,
                                            bool encoded, const ShardRoute& refused) const {
  auto next = encoded ? RouteEncoded(keyspace, key) : Route(keyspace, key);
  if (next.ok() && (*next)->group_id != refused.group_id) {
    auto moved = std::make_shared<ShardRoute>(**next);
    moved->rerouted = v1::Redirect::KEY_NOT_IN_SHARD;
    return moved;
  }
  // The metadata has not caught up with the split yet (its leaders publish it within seconds);
  // the replica here that took the key over knows.
  std::string encoded_key = encoded ? std::string(key) : sharding::EncodeKey(refused.keyspace, key);
  uint64_t owner = driver_->board().HostedGroupFor(encoded_key);
  if (owner != 0 && owner != refused.group_id) {
    return RouteHosted(refused.keyspace, owner, refused.hint);
  }
  // This node has not applied the split that moved the key yet: it will within moments.
  return absl::UnavailableError("the key's shard is being split on this node; not applied; retry");
}

RoutePtr KeyRouter::RouteHosted(const sharding::Keyspace& ks, uint64_t group_id,
                                const v1::ShardHint& like) const {
  GroupStatus status = driver_->Status(group_id);
  v1::ShardHint hint = like;  // a split child: the same replicas as its parent
  hint.set_shard_id(group_id);
  hint.set_span_start(status.span_start);
  hint.set_span_end(status.span_end);
  hint.set_generation(status.generation);
  hint.set_leader_address(status.leader_address);
  // No split index for a session token's parent entry: the child's state already includes every
  // write of its parent below the split, which is all such an entry could ask for.
  return std::make_shared<const ShardRoute>(
      ShardRoute{std::make_shared<RaftReplica>(driver_, transport_, nullptr, group_id),
                 group_id,
                 0,
                 0,
                 ks,
                 {status.span_start, status.span_end},
                 std::move(hint),
                 v1::Redirect::KEY_NOT_IN_SHARD});
}

}  // namespace kv::server
