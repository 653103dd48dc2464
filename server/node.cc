#include "server/node.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <sys/statvfs.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/breaker_registry.h"
#include "server/admin_service.h"
#include "server/authenticator.h"
#include "server/control_service.h"
#include "server/control_state.h"
#include "server/health_monitor.h"
#include "server/kv_service.h"
#include "server/kv_state_machine.h"
#include "server/logging.h"
#include "server/metadata.h"
#include "server/metrics.h"
#include "server/node_identity.h"
#include "server/peer_transport.h"
#include "server/raft_driver.h"
#include "server/raft_replica.h"
#include "server/raft_service.h"
#include "server/rebalancer.h"
#include "server/restore.h"
#include "server/shard_merger.h"
#include "sharding/routing_map.h"
#include "storage/engine.h"

namespace kv::server {
namespace {

// Until sharding arrives every key lives in the default data group, whose shard id (equal to
// its group id) prefixes every data key.
constexpr uint64_t kDataShardId = kDefaultDataGroupId;

// Largest message each listener accepts: peers carry append batches and 1 MiB snapshot chunks;
// clients a maximal key and value with room for the rest; the control plane small requests.
constexpr int kPeerMessageLimit = 64 << 20;
constexpr int kControlMessageLimit = 1 << 20;
int ClientMessageLimit(const RequestLimits& limits) {
  size_t bytes = limits.max_key_bytes + limits.max_value_bytes + (64 << 10);
  return static_cast<int>(std::min<size_t>(std::max<size_t>(bytes, 4 << 20), 1 << 30));
}

// The secrets that name callers: the admin token and the per-client tokens.
absl::StatusOr<AuthOptions> LoadAuthOptions(const NodeConfig& config) {
  AuthOptions auth;
  if (!config.admin_token_file.empty()) {
    auto token = ReadSecretFile(config.admin_token_file, "admin-token-file");
    if (!token.ok()) return token.status();
    auth.admin_token = *token;
  }
  if (!config.client_tokens_file.empty()) {
    std::ifstream f(config.client_tokens_file);
    if (!f) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot read --client-tokens-file ", config.client_tokens_file));
    }
    std::stringstream text;
    text << f.rdbuf();
    auto tokens = ParseClientTokens(text.str());
    if (!tokens.ok()) return tokens.status();
    auth.client_tokens = *std::move(tokens);
  }
  auth.trust_identity_header = config.trust_identity_header;
  return auth;
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    const std::string& address, std::shared_ptr<grpc::ServerCredentials> credentials,
    std::vector<grpc::Service*> services, int max_message_bytes, const char* flag) {
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second kvd started on the same address would then bind
  // too and the kernel would split connections between two nodes. Fail loudly instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Peers and clients ping idle connections to notice dead ones (see peer_transport.cc); a
  // server that counted those pings as abuse would close the connections it should keep.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // Only the admin service is synchronous and it is rarely called; gRPC's default of a polling
  // queue per core would add threads that compete for the data plane's I/O events.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 1);
  int port = 0;
  builder.AddListeningPort(address, std::move(credentials), &port);
  for (auto* service : services) builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (", flag, "; address in use or not local?)"));
  }
  return server;
}

}  // namespace

namespace {

// Shards per keyspace hosted and led here (metrics).
std::map<std::string, Metrics::KeyspaceShardCount> CountKeyspaceShards(
    const ClusterMetadata& metadata, const RaftDriver& driver) {
  std::map<uint64_t, std::string> names = {
      {sharding::kDefaultKeyspaceId, std::string(sharding::kDefaultKeyspaceName)}};
  for (const auto& ks : metadata.Keyspaces()) names[ks.id()] = ks.name();
  std::map<uint64_t, uint64_t> keyspace_of = {{kDefaultDataGroupId, sharding::kDefaultKeyspaceId}};
  for (const auto& d : metadata.Groups()) {
    if (!d.span_end().empty()) keyspace_of[d.group_id()] = d.keyspace_id();
  }
  std::map<std::string, Metrics::KeyspaceShardCount> counts;
  for (const auto& [id, name] : names) counts[name];  // a keyspace with no shard here shows 0
  for (uint64_t group : driver.board().GroupIds()) {
    auto ks = keyspace_of.find(group);
    if (ks == keyspace_of.end()) continue;  // the metadata group, or a group without a keyspace
    auto name = names.find(ks->second);
    if (name == names.end()) continue;
    auto& c = counts[name->second];
    c.hosted += 1;
    if (driver.IsLeader(group)) c.led += 1;
  }
  return counts;
}

}  // namespace

Node::Node(NodeConfig config) : config_(std::move(config)) {}

Node::~Node() { Shutdown(); }

absl::Status Node::Start() {
  if (auto s = FillDefaults(&config_); !s.ok()) return s;
  if (auto s = ValidateConfig(config_); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create data directory ", config_.data_dir, ": ", ec.message()));
  }
  storage::EngineOptions options;
  options.path = config_.data_dir;
  auto engine = storage::Engine::Open(options);
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  if (auto log = engine_->raft_log().stats(); log.torn_bytes_dropped > 0) {
    logging::Warning(
        "raft log: dropped {} bytes at the end of the newest segment (a write a crash cut short; "
        "never acknowledged)",
        log.torn_bytes_dropped);
  }
  uint64_t cluster_id = ClusterIdOf(config_.cluster_name);
  if (auto s = CheckOrStampIdentity(engine_.get(), config_.node_id, cluster_id); !s.ok()) {
    return s;
  }
  auto auth = LoadAuthOptions(config_);
  if (!auth.ok()) return auth.status();
  auth_ = std::make_unique<Authenticator>(*std::move(auth));
  std::string peer_token;
  if (!config_.peer_token_file.empty()) {
    auto token = ReadSecretFile(config_.peer_token_file, "peer-token-file");
    if (!token.ok()) return token.status();
    peer_token = *token;
  }
  peer_auth_ = std::make_unique<PeerAuthenticator>(config_.peer_tls.enabled(), peer_token);
  control_ = std::make_unique<ControlState>();
  metadata_ = std::make_unique<ClusterMetadata>();
  // Group descriptors are applied on the driver thread; the driver creates or destroys this
  // node's replica in a later iteration.
  metadata_->SetGroupObserver(
      [this](uint64_t group_id, std::optional<internal::GroupDescriptor> descriptor) {
        driver_->Reconcile(group_id, std::move(descriptor));
      });
  breakers_ = std::make_unique<control::BreakerRegistry>(
      control::BreakerConfig{}, [] { return absl::GetCurrentTimeNanos() / 1000; },
      std::random_device{}());
  if (!config_.metrics_listen.empty()) {
    auto metrics = Metrics::Start(config_.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    metrics_ = *std::move(metrics);
  }
  DriverOptions d;
  if (metrics_) {
    d.on_log_append = [m = metrics_.get()](double s) { m->ObserveLogAppend(s); };
    d.on_apply = [m = metrics_.get()](double s) { m->ObserveApply(s); };
  }
  d.node_id = config_.node_id;
  d.colocate_group = kMetadataGroupId;
  d.colocate_with = kDefaultDataGroupId;
  d.sync = config_.sync;
  d.tick = absl::Milliseconds(config_.tick_ms);
  d.election_tick = config_.election_ticks;
  d.quiesce_after_ticks = config_.quiesce_after_ticks;
  d.join = config_.join;
  d.compact_threshold = config_.log_compact_threshold;
  d.compact_retain = std::min(config_.log_retain, config_.log_compact_threshold);
  d.compact_bytes = config_.log_compact_bytes;
  d.max_uncommitted_bytes = config_.max_uncommitted_bytes;
  d.initial_voters = config_.peers;
  if (d.initial_voters.empty()) d.initial_voters[config_.node_id] = config_.peer_listen;
  d.client_address =
      config_.advertise_client_address.empty() ? config_.listen : config_.advertise_client_address;
  d.force_new_cluster = config_.force_new_cluster;
  d.peer_address = config_.peer_listen;
  d.delegate_snapshots = config_.delegate_snapshots;
  d.locality_of = [metadata = metadata_.get()](uint64_t node) {
    auto record = metadata->Node(node);
    return record ? NodeLocality{record->region(), record->zone()} : NodeLocality{};
  };
  uint64_t session_ttl_ms = config_.client_session_ttl_seconds * 1000;
  auto make_state_machine = [this, session_ttl_ms](const internal::GroupDescriptor& g) {
    auto sm = std::make_unique<KvStateMachine>(engine_.get(), g.group_id(),
                                               g.group_id() == kMetadataGroupId
                                                   ? ShardScope::WholeKeyspace(kSystemShardId)
                                                   : ShardScope::Of(g));
    sm->set_session_ttl(session_ttl_ms);
    if (g.group_id() == kMetadataGroupId) {
      sm->SetSystemObserver([this](const std::string& key, const std::string& value) {
        if (!metadata_->OnSystemKey(key, value)) control_->OnSystemKey(key, value);
      });
    }
    return sm;
  };
  if (!config_.restore_from.empty()) {
    RestoreOptions restore;
    restore.backup_path = config_.restore_from;
    restore.engine = engine_.get();
    restore.driver = &d;
    restore.state_machines = make_state_machine;
    if (auto s = RestoreFromBackup(restore); !s.ok()) return s;
  }
  driver_ = std::make_unique<RaftDriver>(engine_.get(), d, make_state_machine);
  PeerTransportOptions t;
  t.cluster_id = cluster_id;
  t.self_id = config_.node_id;
  t.self_client_address = d.client_address;
  t.credentials = MakePeerChannelCredentials(config_.peer_tls);
  t.name_peers_by_certificate = config_.peer_tls.enabled();
  t.peer_token = peer_token;
  transport_ = std::make_unique<PeerTransport>(
      t, [this](uint64_t id) { return driver_->AddressOf(id); }, breakers_.get());
  driver_->SetTransport(transport_.get());
  if (auto s =
          driver_->Open({{kMetadataGroupId, kSystemShardId}, {kDefaultDataGroupId, kDataShardId}});
      !s.ok()) {
    return s;
  }
  replica_ = std::make_shared<RaftReplica>(driver_.get(), transport_.get(),
                                           driver_->StateMachineOf(kDefaultDataGroupId),
                                           kDefaultDataGroupId);
  meta_replica_ = std::make_unique<RaftReplica>(
      driver_.get(), transport_.get(), driver_->StateMachineOf(kMetadataGroupId), kMetadataGroupId);
  router_ = std::make_unique<KeyRouter>(metadata_.get(), driver_.get(), transport_.get(), replica_);
  shard_load_ = std::make_unique<ShardLoad>();
  SplitPolicy policy;
  policy.size_bytes = config_.split_size_bytes;
  policy.load_qps = config_.split_load_qps;
  policy.load_for = absl::Seconds(config_.split_load_seconds);
  policy.min_interval = absl::Seconds(config_.split_min_interval_seconds);
  splitter_ = std::make_unique<ShardSplitter>(driver_.get(), metadata_.get(), meta_replica_.get(),
                                              transport_.get(), policy, shard_load_.get());
  MergePolicy merges;
  merges.size_bytes = config_.merge_size_bytes;
  merges.split_size_bytes = config_.split_size_bytes;
  merges.cold_qps = config_.merge_cold_qps;
  merges.quiet_for = absl::Seconds(static_cast<int64_t>(config_.merge_after_seconds));
  merger_ = std::make_unique<ShardMerger>(driver_.get(), metadata_.get(), meta_replica_.get(),
                                          transport_.get(), merges, shard_load_.get());
  kv_service_ = std::make_unique<KvService>(router_.get(), config_.limits, control_.get(),
                                            metrics_.get(), auth_.get(), shard_load_.get());
  RaftServiceOptions r;
  r.cluster_id = cluster_id;
  r.limits = config_.limits;
  r.max_snapshot_bytes = config_.max_snapshot_bytes;
  r.snapshot_idle = absl::Seconds(static_cast<int64_t>(config_.snapshot_idle_seconds));
  r.system_group_id = kMetadataGroupId;
  raft_service_ = std::make_unique<RaftService>(driver_.get(), r, peer_auth_.get(), control_.get());
  admin_service_ = std::make_unique<AdminService>(
      driver_.get(), std::vector<uint64_t>{kDefaultDataGroupId, kMetadataGroupId}, cluster_id,
      auth_.get(), meta_replica_.get(), metadata_.get(), splitter_.get(), merger_.get());
  rebalancer_ = std::make_unique<Rebalancer>(
      driver_.get(), metadata_.get(),
      [this](uint64_t shard, uint64_t from, uint64_t to) {
        return admin_service_->MoveReplicaHere(shard, from, to);
      },
      config_.leader_balance_gap);
  admin_service_->SetRebalancer(rebalancer_.get());

  // Clients: kv and admin. Peers: Raft transport only, on a listener of its own, so that a
  // process that reaches the client port cannot speak Raft at all.
  auto client_server = StartServer(
      config_.listen, MakeServerCredentials(config_.tls, config_.client_cert_required),
      {kv_service_.get(), admin_service_.get()}, ClientMessageLimit(config_.limits), "--listen");
  if (!client_server.ok()) return client_server.status();
  server_ = *std::move(client_server);
  auto peer_server = StartServer(config_.peer_listen, MakeServerCredentials(config_.peer_tls, true),
                                 {raft_service_.get()}, kPeerMessageLimit, "--peer-listen");
  if (!peer_server.ok()) return peer_server.status();
  peer_server_ = *std::move(peer_server);
  driver_->Start();

  health_ = std::make_unique<HealthMonitor>(driver_.get(), kDefaultDataGroupId, control_.get(),
                                            config_.data_dir, config_.health);
  grpc::HealthCheckServiceInterface* health_service = nullptr;
  if (!config_.control_listen.empty()) {
    control_service_ =
        std::make_unique<ControlService>(meta_replica_.get(), control_.get(), health_.get(),
                                         breakers_.get(), auth_.get(), config_.node_id);
    // The control plane has its own server, port and threads: it must answer while the data
    // plane is saturated or halted.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder control_builder;
    int control_port = 0;
    control_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    control_builder.AddListeningPort(
        config_.control_listen, MakeServerCredentials(config_.tls, config_.client_cert_required),
        &control_port);
    control_builder.SetMaxReceiveMessageSize(kControlMessageLimit);
    control_builder.RegisterService(control_service_.get());
    control_server_ = control_builder.BuildAndStart();
    grpc::EnableDefaultHealthCheckService(false);
    if (!control_server_ || control_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on --control-listen ", config_.control_listen));
    }
    health_service = control_server_->GetHealthCheckService();
  }
  health_->SetClusterWarnings([this] { return ClusterWarnings(); });
  health_->Start(health_service);
  // Once a second: metrics, and abandoned snapshot streams let go of their memory.
  housekeeping_thread_ = std::thread([this] {
    while (!stopping_) {
      if (metrics_) {
        metrics_->Refresh(driver_->Status(kDefaultDataGroupId), driver_->counters(), *control_,
                          *breakers_, *engine_, splitter_->counters());
        metrics_->SetHealth(health_->Report().status());
        metrics_->SetKeyspaceShards(CountKeyspaceShards(*metadata_, *driver_));
        metrics_->SetMerges(merger_->counters());
        RefreshPlacementMetrics();
        struct statvfs fs {};
        if (statvfs(config_.data_dir.c_str(), &fs) == 0) {
          metrics_->SetDiskSpace(static_cast<double>(fs.f_bavail) * fs.f_frsize,
                                 static_cast<double>(fs.f_blocks) * fs.f_frsize);
        }
      }
      raft_service_->ExpireIdleSnapshots();
      RegisterSelf();
      MarkRemovedNodes();
      MarkDownNodes();
      PublishLedShards();
      if (++housekeeping_rounds_ % 5 == 0) ReconcileGroups();
      splitter_->Tick(absl::Now());
      merger_->Tick(absl::Now());
      rebalancer_->Tick();
      for (int i = 0; i < 10 && !stopping_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });
  return absl::OkStatus();
}

void Node::RegisterSelf() {
  if (registering_.load() || driver_->LeaderId(kMetadataGroupId) == 0) return;
  internal::NodeRecord want;
  want.set_format(kMetadataFormat);
  want.set_node_id(config_.node_id);
  want.set_peer_address(config_.peer_listen);
  want.set_client_address(
      config_.advertise_client_address.empty() ? config_.listen : config_.advertise_client_address);
  want.set_region(config_.region);
  want.set_zone(config_.zone);
  auto have = metadata_->Node(config_.node_id);
  // A drain (kvctl node drain) outlasts restarts; only kvctl node drain --undo ends it. Down is
  // the metadata leader's to clear, once it hears from this node.
  want.set_state(have && have->state() == internal::NodeRecord::DRAINING
                     ? internal::NodeRecord::DRAINING
                     : internal::NodeRecord::UP);
  want.set_down(have && have->down());
  uint32_t leaders = 0;
  for (const auto& d : metadata_->Groups()) {
    if (!d.span_end().empty() && driver_->IsLeader(d.group_id())) ++leaders;
  }
  want.set_leaders(leaders);
  want.set_degraded(health_ && health_->SustainedDegraded());
  // A removed node may still believe it is a member: only the metadata group's leader, which
  // refuses writes forwarded by non-members, can tell. A node added again registers anew.
  if (have && have->SerializeAsString() == want.SerializeAsString()) return;
  ProposeNodeRecord(want);
}

void Node::ProposeNodeRecord(const internal::NodeRecord& record) {
  internal::Command cmd;
  cmd.mutable_system_put()->set_key(NodeKey(record.node_id()));
  cmd.mutable_system_put()->set_value(record.SerializeAsString());
  registering_ = true;
  meta_replica_->ProposeWrite(std::move(cmd), v1::WRITE_MAJORITY, absl::Now() + absl::Seconds(5),
                              [this](absl::StatusOr<WriteOutcome>) { registering_ = false; });
}

void Node::PublishLedShards() {
  // A shard's own record is the authority on its span; the metadata's routing map follows it,
  // only forwards: a split is published by the leaders of both halves.
  if (registering_.load()) return;
  auto led = std::make_shared<std::promise<std::vector<internal::GroupDescriptor>>>();
  auto future = led->get_future();
  driver_->ShardDescriptors(/*led_only=*/true, [led](std::vector<internal::GroupDescriptor> d) {
    led->set_value(std::move(d));
  });
  if (future.wait_for(std::chrono::seconds(1)) != std::future_status::ready) return;
  std::map<uint64_t, internal::GroupDescriptor> known;
  for (auto& d : metadata_->Groups()) known[d.group_id()] = std::move(d);
  for (const auto& d : future.get()) {
    auto it = known.find(d.group_id());
    // Published when newer in either part of the epoch (a split, or a membership change).
    if (it != known.end() &&
        !sharding::IsNewer({d.epoch().generation(), d.epoch().conf_version()},
                           {it->second.epoch().generation(), it->second.epoch().conf_version()})) {
      continue;
    }
    internal::Command cmd;
    cmd.mutable_system_put()->set_key(GroupKey(d.group_id()));
    cmd.mutable_system_put()->set_value(d.SerializeAsString());
    registering_ = true;
    meta_replica_->ProposeWrite(std::move(cmd), v1::WRITE_MAJORITY, absl::Now() + absl::Seconds(5),
                                [this](absl::StatusOr<WriteOutcome>) { registering_ = false; });
    return;  // one at a time
  }
}

void Node::ReconcileGroups() {
  // Descriptors are acted on as they apply; this catches what that could not (a split child
  // whose parent replica here skipped the split by installing a snapshot beyond it).
  for (auto& d : metadata_->Groups()) driver_->Reconcile(d.group_id(), d);
}

void Node::MarkRemovedNodes() {
  // The metadata group's membership is the authority on which nodes belong to the cluster; its
  // leader records a node that left it (kvctl member remove) as removed.
  if (registering_.load() || !driver_->IsLeader(kMetadataGroupId)) return;
  // Until the leader has published its membership every node would look like a non-member.
  if (driver_->Status(kMetadataGroupId).conf.voters_size() == 0) return;
  for (auto record : metadata_->Nodes()) {
    if (record.state() == internal::NodeRecord::REMOVED ||
        driver_->IsMemberOf(kMetadataGroupId, record.node_id())) {
      continue;
    }
    record.set_state(internal::NodeRecord::REMOVED);
    ProposeNodeRecord(record);
    return;  // one at a time
  }
}

void Node::MarkDownNodes() {
  if (config_.dead_node_timeout_seconds == 0 || registering_.load() ||
      !driver_->IsLeader(kMetadataGroupId)) {
    return;
  }
  absl::Duration timeout = absl::Seconds(static_cast<int64_t>(config_.dead_node_timeout_seconds));
  // Heard again within a few election timeouts: back. The silence is as of the last beat.
  absl::Duration back_within = absl::Milliseconds(3LL * config_.election_ticks * config_.tick_ms);
  for (auto record : metadata_->Nodes()) {
    if (record.state() == internal::NodeRecord::REMOVED || record.node_id() == config_.node_id) {
      continue;
    }
    absl::Duration silence = driver_->SilenceOf(record.node_id());
    bool down = silence >= timeout;
    if (record.down() ? silence > back_within : !down) continue;
    logging::Warning("node {} {} ({} s without a word from it)", record.node_id(),
                     down ? "is down: its replicas will be re-created elsewhere" : "is back",
                     silence == absl::InfiniteDuration()
                         ? std::string("never heard")
                         : std::to_string(absl::ToInt64Seconds(silence)));
    record.set_down(down);
    ProposeNodeRecord(record);
    return;  // one at a time
  }
}

std::vector<std::string> Node::ClusterWarnings() const {
  std::vector<std::string> warnings;
  for (const auto& n : metadata_->Nodes()) {
    if (n.state() != internal::NodeRecord::REMOVED && n.down()) {
      warnings.push_back(absl::StrCat("node ", n.node_id(), " is down"));
    }
  }
  if (rebalancer_) {
    for (const auto& u : rebalancer_->GetStatus().plan.unplaceable) {
      warnings.push_back(absl::StrCat("shard ", u.shard_id,
                                      " is under-replicated (its replica on node ", u.stuck_on,
                                      " has nowhere to go: ", u.reason, ")"));
    }
  }
  return warnings;
}

void Node::RefreshPlacementMetrics() {
  Rebalancer::Status s = rebalancer_->GetStatus();
  Metrics::PlacementCounts c;
  c.moves_pending = static_cast<double>(s.plan.moves.size());
  c.unplaceable_shards = static_cast<double>(s.plan.unplaceable.size());
  c.nodes_down = static_cast<double>(s.nodes_down);
  c.paused = s.paused ? 1 : 0;
  c.moves_done = s.moves_done;
  c.leader_transfers = s.leader_transfers;
  metrics_->SetPlacement(c);
}

void Node::Shutdown() {
  stopping_ = true;
  if (admin_service_) admin_service_->Stop();
  if (housekeeping_thread_.joinable()) housekeeping_thread_.join();
  if (health_) health_->Stop();
  if (control_server_) {
    control_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    control_server_.reset();
  }
  if (peer_server_) {
    // Peers retransmit: nothing in flight on the peer port needs a grace period.
    peer_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  }
  if (server_) {
    // In-flight requests get a grace period; whatever still waits on replication afterwards is
    // failed by stopping the driver, which lets the server's shutdown complete.
    std::atomic<bool> drained{false};
    std::thread stopper([this, &drained] {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
      drained = true;
    });
    auto grace = std::chrono::steady_clock::now() + std::chrono::milliseconds(3500);
    while (!drained && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (driver_) driver_->Stop();
    stopper.join();
    server_->Wait();
    server_.reset();
  }
  if (driver_) driver_->Stop();
  if (peer_server_) {
    peer_server_->Wait();
    peer_server_.reset();
  }
  transport_.reset();
  kv_service_.reset();
  router_.reset();
  admin_service_.reset();
  merger_.reset();
  splitter_.reset();
  shard_load_.reset();
  raft_service_.reset();
  admin_service_.reset();
  replica_.reset();
  meta_replica_.reset();
  driver_.reset();
  control_service_.reset();
  health_.reset();
  metrics_.reset();
  engine_.reset();
}

}  // namespace kv::server
