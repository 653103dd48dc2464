#include "server/node_config.h"

#include <algorithm>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kv::server {

absl::Status FillDefaults(NodeConfig* config) {
  if (!config->peer_listen.empty()) return absl::OkStatus();
  if (auto s = ValidateAddress(config->listen, "--listen"); !s.ok()) return s;
  size_t colon = config->listen.rfind(':');
  uint32_t port = 0;
  if (!absl::SimpleAtoi(config->listen.substr(colon + 1), &port) || port + 300 > 65535) {
    return absl::InvalidArgumentError(
        "--peer-listen defaults to the --listen port + 300, which is out of range here; set it");
  }
  config->peer_listen = absl::StrCat(config->listen.substr(0, colon), ":", port + 300);
  return absl::OkStatus();
}

absl::Status ValidateConfig(const NodeConfig& config) {
  if (config.node_id == 0) return absl::InvalidArgumentError("--node-id must be >= 1");
  if (config.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  if (!config.restore_from.empty() && (config.join || config.force_new_cluster)) {
    return absl::InvalidArgumentError(
        "--restore-from seeds a new cluster: it goes with --peers (every node restores the same "
        "file), not with --join or --force-new-cluster");
  }
  if (auto s = ValidateAddress(config.listen, "--listen"); !s.ok()) return s;
  if (auto s = ValidateAddress(config.peer_listen, "--peer-listen"); !s.ok()) return s;
  if (config.peer_listen == config.listen || config.peer_listen == config.control_listen) {
    return absl::InvalidArgumentError(
        "--peer-listen must differ from --listen and --control-listen: peer services are never "
        "served where clients connect");
  }
  if (!config.advertise_client_address.empty()) {
    if (auto s = ValidateAddress(config.advertise_client_address, "--advertise-client-address");
        !s.ok()) {
      return s;
    }
  }
  for (const auto& [label, flag] :
       {std::pair{&config.region, "--region"}, std::pair{&config.zone, "--zone"}}) {
    bool ok = label->size() <= 64 && std::all_of(label->begin(), label->end(), [](char c) {
                return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
              });
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, " takes at most 64 letters, digits, '-' and '_', got \"", *label, "\""));
    }
  }
  if (auto s = CheckTlsFiles(config.tls, "tls", config.client_cert_required); !s.ok()) return s;
  if (config.client_cert_required && !config.tls.enabled()) {
    return absl::InvalidArgumentError("--client-cert-required needs --tls-cert-file and friends");
  }
  if (auto s = CheckTlsFiles(config.peer_tls, "peer-tls", /*ca_required=*/true); !s.ok()) {
    return s;
  }
  if (config.force_new_cluster && config.join) {
    return absl::InvalidArgumentError("--force-new-cluster and --join exclude each other");
  }
  if (config.max_snapshot_bytes < (1 << 20) || config.snapshot_idle_seconds == 0 ||
      config.client_session_ttl_seconds == 0 || config.log_compact_bytes < (1 << 20) ||
      config.max_uncommitted_bytes < (1 << 20)) {
    return absl::InvalidArgumentError(
        "--max-snapshot-bytes, --log-compact-bytes and --max-uncommitted-bytes must be >= 1 MiB, "
        "--snapshot-idle-seconds and --client-session-ttl-seconds >= 1");
  }
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
    if (auto s = ValidateAddress(std::string(kv.second), "--peers address"); !s.ok()) return s;
    if (!peers.emplace(id, std::string(kv.second)).second) {
      return absl::InvalidArgumentError(absl::StrCat("--peers lists node ", id, " twice"));
    }
  }
  return peers;
}

absl::Status ValidateAddress(const std::string& address, const std::string& what) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", address.substr(0, 300), "' is not HOST:PORT: ", why));
  };
  if (address.size() > 255) return bad("longer than 255 bytes");
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no host");
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  uint32_t port_number = 0;
  if (port.empty() || port.size() > 5 || !absl::SimpleAtoi(port, &port_number) ||
      port_number == 0 || port_number > 65535 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return bad("the port must be a number in 1..65535");
  }
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) return bad("an IPv6 host needs [brackets]");
    host = host.substr(1, host.size() - 2);
    if (host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos) {
      return bad("malformed IPv6 address");
    }
    return absl::OkStatus();
  }
  if (host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
      std::string::npos) {
    return bad("the host may hold letters, digits, '.', '-' and '_' only");
  }
  return absl::OkStatus();
}

}  // namespace kv::server
