#include "server/node_config.h"

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kv::server {

absl::Status ValidateConfig(const NodeConfig& config) {
  if (config.node_id == 0) return absl::InvalidArgumentError("--node-id must be >= 1");
  if (config.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  if (config.listen.empty()) return absl::InvalidArgumentError("--listen is required");
  if (config.limits.max_key_bytes == 0 || config.limits.max_value_bytes == 0) {
    return absl::InvalidArgumentError("--max-key-bytes and --max-value-bytes must be >= 1");
  }
  if (config.tick_ms < 1 || config.election_ticks < 3) {
    return absl::InvalidArgumentError("--tick-ms must be >= 1 and --election-ticks >= 3");
  }
  if (config.cluster_name.empty()) return absl::InvalidArgumentError("--cluster-name is empty");
  if (!config.join && !config.peers.empty() && !config.peers.contains(config.node_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--peers must include this node (id ", config.node_id, ")"));
  }
  return absl::OkStatus();
}

uint64_t ClusterIdOf(const std::string& cluster_name) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : cluster_name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h == 0 ? 1 : h;
}

absl::StatusOr<std::map<uint64_t, std::string>> ParsePeers(const std::string& spec) {
  std::map<uint64_t, std::string> peers;
  if (spec.empty()) return peers;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, '=');
    uint64_t id = 0;
    if (!absl::SimpleAtoi(kv.first, &id) || id == 0 || kv.second.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--peers entry '", std::string(item), "' is not ID=HOST:PORT with ID >= 1"));
    }
    if (!peers.emplace(id, std::string(kv.second)).second) {
      return absl::InvalidArgumentError(absl::StrCat("--peers lists node ", id, " twice"));
    }
  }
  return peers;
}

}  // namespace kv::server
