// Node: one kvd process. Opens the engine, checks the directory's identity, starts the Raft
// driver with its groups, and serves the client, peer and control listeners until Shutdown.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "kvstore/v1/internal.pb.h"
#include "server/node_config.h"

namespace grpc {
class Server;
}

namespace kv::storage {
class Engine;
}
namespace kv::control {
class BreakerRegistry;
}

namespace kv::server {

class KvStateMachine;
class Replica;
class KvService;
class KeyRouter;
class ShardLoad;
class ShardMerger;
class ShardSplitter;
class Rebalancer;
class RaftDriver;
class PeerTransport;
class RaftService;
class AdminService;
class ControlState;
class ControlService;
class HealthMonitor;
class Metrics;
class Authenticator;
class ClusterMetadata;
class PeerAuthenticator;

class Node {
 public:
  explicit Node(NodeConfig config);
  ~Node();

  // Opens storage and starts listening. Fails with a message fit for the operator.
  absl::Status Start();
  // Stops accepting requests, lets in-flight ones finish (up to a grace period), closes storage.
  void Shutdown();

 private:
  // Records (or refreshes) this node's NodeRecord in the metadata: addresses, labels, up.
  void RegisterSelf();
  // On the metadata group's leader: marks nodes no longer in that group's membership removed.
  void MarkRemovedNodes();
  // The metadata leader marks a node down after --dead-node-timeout of silence, and up again.
  void MarkDownNodes();
  // Shards that cannot be placed and nodes marked down, for the health report and metrics.
  std::vector<std::string> ClusterWarnings() const;
  void RefreshPlacementMetrics();
  void ProposeNodeRecord(const internal::NodeRecord& record);
  // On leaders of keyspace shards: publishes a descriptor the metadata has only an older
  // generation of (after a split).
  void PublishLedShards();
  void ReconcileGroups();

  NodeConfig config_;
  std::unique_ptr<storage::Engine> engine_;
  // The metadata group (cluster settings, nodes, group descriptors) and the default data group.
  std::unique_ptr<Replica> meta_replica_;
  std::unique_ptr<RaftDriver> driver_;
  std::unique_ptr<PeerTransport> transport_;
  std::shared_ptr<Replica> replica_;
  std::unique_ptr<KeyRouter> router_;
  std::unique_ptr<ShardLoad> shard_load_;
  std::unique_ptr<ShardSplitter> splitter_;
  std::unique_ptr<ShardMerger> merger_;
  std::unique_ptr<KvService> kv_service_;
  std::unique_ptr<RaftService> raft_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<Rebalancer> rebalancer_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<PeerAuthenticator> peer_auth_;
  std::unique_ptr<grpc::Server> server_;       // clients: kv, admin
  std::unique_ptr<grpc::Server> peer_server_;  // peers: Raft transport

  // The control sidecar: its own server and threads.
  std::unique_ptr<ControlState> control_;
  std::unique_ptr<ClusterMetadata> metadata_;
  std::atomic<bool> registering_{false};  // a node record write is in flight
  uint64_t housekeeping_rounds_ = 0;
  std::unique_ptr<control::BreakerRegistry> breakers_;
  std::unique_ptr<HealthMonitor> health_;
  std::unique_ptr<ControlService> control_service_;
  std::unique_ptr<grpc::Server> control_server_;
  std::unique_ptr<Metrics> metrics_;
  std::thread housekeeping_thread_;
  std::atomic<bool> stopping_{false};
};

}  // namespace kv::server
