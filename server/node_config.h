// Everything kvd is configured with (flags or config file), validated before anything starts.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/health_thresholds.h"
#include "server/validation.h"

namespace kv::server {

struct NodeConfig {
  uint64_t node_id = 0;
  std::string data_dir;
  std::string listen = "127.0.0.1:7001";
  // node id -> address of every voter at bootstrap, including this node. Empty: single node.
  std::map<uint64_t, std::string> peers;
  // Nodes of clusters with different names refuse each other's traffic.
  std::string cluster_name = "kvstore";
  // Start empty and wait to be added (kvctl member add) instead of bootstrapping.
  bool join = false;
  int tick_ms = 100;
  int election_ticks = 10;
  uint64_t log_compact_threshold = 20000;
  uint64_t log_retain = 5000;
  // Control sidecar and metrics listeners; empty = not served.
  std::string control_listen;
  std::string metrics_listen;
  std::string admin_token_file;
  HealthThresholds health;
  // fsync every write before acknowledging it. Off only for benchmarks.
  bool sync = true;
  RequestLimits limits;
};

absl::Status ValidateConfig(const NodeConfig& config);

// Stable 64-bit id of a cluster name (FNV-1a), stored in every node's identity.
uint64_t ClusterIdOf(const std::string& cluster_name);

// Parses "1=127.0.0.1:7001,2=127.0.0.1:7002".
absl::StatusOr<std::map<uint64_t, std::string>> ParsePeers(const std::string& spec);

}  // namespace kv::server
