// Everything kvd is configured with (flags or config file), validated before anything starts.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/health_thresholds.h"
#include "server/tls_credentials.h"
#include "server/validation.h"

namespace kv::server {

struct NodeConfig {
  uint64_t node_id = 0;
  std::string data_dir;
  // Client listener (kv and admin APIs).
  std::string listen = "127.0.0.1:7001";
  // Peer listener (Raft traffic, snapshots, forwarded writes): never served on `listen`.
  // Empty: the host of `listen` with its port + 300 (7001 -> 7301), see FillDefaults.
  std::string peer_listen;
  // Where clients reach this node, told to peers so they can name the leader; default `listen`.
  std::string advertise_client_address;
  // Placement labels, recorded with this node in the metadata (`kvctl node list`).
  std::string region;
  std::string zone;
  // node id -> peer address of every voter at bootstrap, including this node. Empty: single
  // node.
  std::map<uint64_t, std::string> peers;
  // Nodes of clusters with different names refuse each other's traffic.
  std::string cluster_name = "kvstore";
  // Start empty and wait to be added (kvctl member add) instead of bootstrapping.
  bool join = false;
  int tick_ms = 100;
  int election_ticks = 10;
  // An idle group goes quiet after this many ticks without work (0: never).
  int quiesce_after_ticks = 20;
  uint64_t log_compact_threshold = 20000;
  uint64_t log_retain = 5000;
  // A leader asks a caught-up replica at least as close to the receiver to stream a snapshot
  // (server/snapshot_delegation.h).
  bool delegate_snapshots = true;
  // Control sidecar and metrics listeners; empty = not served.
  std::string control_listen;
  std::string metrics_listen;
  std::string admin_token_file;
  // Security at the edges (see authenticator.h and tls_credentials.h).
  TlsFiles tls;       // client and control listeners
  TlsFiles peer_tls;  // peer listener and channels to peers (mTLS, certificates name node-N)
  bool client_cert_required = false;
  std::string peer_token_file;     // without peer TLS: the secret every peer must present
  std::string client_tokens_file;  // `NAME TOKEN` lines: per-client bearer tokens
  bool trust_identity_header = false;
  // Recovery from a permanent loss of quorum: make this node the only voter of every group.
  bool force_new_cluster = false;
  // Compact the log also once the entries behind the applied index hold this many bytes.
  uint64_t log_compact_bytes = 64ull << 20;
  // A leader refuses writes while its uncommitted log tail holds this many bytes (raft.h).
  uint64_t max_uncommitted_bytes = 64ull << 20;
  // Automatic splits of keyspace shards (ShardSplitter): by size (0: off), by load (requests per
  // second for split_load_seconds; 0: off), at most one per split_min_interval_seconds.
  uint64_t split_size_bytes = 64ull << 20;
  double split_load_qps = 0;
  uint64_t split_load_seconds = 10;
  uint64_t split_min_interval_seconds = 10;
  // Automatic merges of small cold neighbours (ShardMerger; 0 bytes: off).
  uint64_t merge_size_bytes = 16ull << 20;
  double merge_cold_qps = 1;
  uint64_t merge_after_seconds = 600;
  // Placement: a node the metadata leader has not heard from for this long is marked down and
  // its replicas are re-created elsewhere (0: never).
  uint64_t dead_node_timeout_seconds = 300;
  // Leaders are spread: a node hands one leadership per round to a replica on a node leading at
  // least this many fewer keyspace shards (0: leaders stay where elections put them).
  uint32_t leader_balance_gap = 2;
  // A client silent this long (by the replicated clock) loses its exactly-once records.
  uint64_t client_session_ttl_seconds = 600;
  // Incoming snapshot streams: at most one per peer, each at most this large, dropped when
  // idle for snapshot_idle_seconds.
  uint64_t max_snapshot_bytes = 1ull << 30;
  uint64_t snapshot_idle_seconds = 30;
  HealthThresholds health;
  // fsync every write before acknowledging it. Off only for benchmarks.
  bool sync = true;
  RequestLimits limits;
  // The log (server/logging.h): debug, info, warning, error; text or json.
  std::string log_level = "info";
  std::string log_format = "text";
  // A backup (`kvctl snapshot save`) that seeds this node's empty data directory at its first
  // start (server/restore.h); ignored once the directory holds that restore.
  std::string restore_from;
};

// Fills what defaults to other settings (the peer address from the client address). Fails when
// it cannot (a --listen port above 65235 needs an explicit --peer-listen).
absl::Status FillDefaults(NodeConfig* config);
absl::Status ValidateConfig(const NodeConfig& config);

// Stable 64-bit id of a cluster name (FNV-1a), stored in every node's identity.
uint64_t ClusterIdOf(const std::string& cluster_name);

// Parses "1=127.0.0.1:7301,2=127.0.0.1:7302" (every address checked with ValidateAddress).
absl::StatusOr<std::map<uint64_t, std::string>> ParsePeers(const std::string& spec);

// HOST:PORT with a non-empty host (a name, an IPv4 address or a bracketed IPv6 address) of
// printable characters and a port in 1..65535.
absl::Status ValidateAddress(const std::string& address, const std::string& what);

}  // namespace kv::server
