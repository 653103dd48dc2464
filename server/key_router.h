// KeyRouter: which replica on this node serves a request's key. The default keyspace is the
// default data group; a created keyspace's key is encoded (sharding/key_codec.h) and looked up
// in the shards the metadata group described, as this node applied them. Refusals a person can
// act on: NOT_FOUND for an unknown keyspace, FAILED_PRECONDITION naming the region for a geo key
// of a region the keyspace does not have, and FAILED_PRECONDITION naming the shard's replicas
// when this node holds none of them (ask one of those).
// Thread-safe.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "kvstore/v1/kv.pb.h"
#include "server/message_sink.h"
#include "server/metadata.h"
#include "server/raft_driver.h"
#include "server/replica.h"
#include "sharding/key_range.h"
#include "sharding/keyspace.h"

namespace kv::server {

struct ShardRoute {
  std::shared_ptr<Replica> replica;
  uint64_t group_id = 0;
  uint64_t split_from = 0, split_index = 0;  // a split child: its parent and the split's index
  sharding::Keyspace keyspace;
  sharding::KeyRange span;  // of the shard
  // What responses tell the client of the shard (empty for the default keyspace).
  v1::ShardHint hint;
  // How the request's own route (RouteHint) was out of date, if it was (ResponseHeader.rerouted).
  v1::Redirect::Reason rerouted = v1::Redirect::REASON_UNSPECIFIED;
};
// Shared, so the default keyspace's route is built once, not per request.
using RoutePtr = std::shared_ptr<const ShardRoute>;

class KeyRouter {
 public:
  // `default_replica` serves the default keyspace.
  KeyRouter(const ClusterMetadata* metadata, RaftDriver* driver, MessageSink* transport,
            std::shared_ptr<Replica> default_replica);

  // `asked`: where the client's cache sent the request (compared, never trusted).
  absl::StatusOr<RoutePtr> Route(
      std::string_view keyspace, std::string_view user_key,
      const v1::RouteHint& asked = v1::RouteHint::default_instance()) const;
  // The same for an encoded position of a created keyspace (a hash scan's).
  absl::StatusOr<RoutePtr> RouteEncoded(
      std::string_view keyspace, std::string_view encoded,
      const v1::RouteHint& asked = v1::RouteHint::default_instance()) const;
  // After `refused` (a replica here) refused the key as outside its span: the key's shard as
  // the metadata knows it or, when the metadata has not caught up with a split yet, the replica
  // here that owns the key now. An error when neither is another shard.
  absl::StatusOr<RoutePtr> Reroute(std::string_view keyspace, std::string_view key, bool encoded,
                                   const ShardRoute& refused) const;
  // The keyspace a name refers to ("" and "default": the default keyspace).
  absl::StatusOr<sharding::Keyspace> Resolve(std::string_view keyspace) const;

 private:
  absl::StatusOr<RoutePtr> RouteShard(const sharding::Keyspace& ks, std::string_view encoded,
                                      const v1::RouteHint& asked) const;
  // A replica hosted here, described from what this node's driver published of it.
  RoutePtr RouteHosted(const sharding::Keyspace& ks, uint64_t group_id,
                       const v1::ShardHint& like) const;

  const ClusterMetadata* const metadata_;
  RaftDriver* const driver_;
  MessageSink* const transport_;
  const RoutePtr default_route_;
};

// The keyspace a record describes.
sharding::Keyspace KeyspaceOf(const internal::KeyspaceRecord& record);

}  // namespace kv::server
