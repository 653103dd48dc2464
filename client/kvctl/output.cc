#include "client/kvctl/output.h"

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace kv::kvctl {
namespace {

using nlohmann::json;

bool IsUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

std::string Base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out.push_back(kAlphabet[(v >> k) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// Binary-safe JSON: text as "key", anything else as "key_base64".
void PutBytes(json* j, const std::string& name, const std::string& bytes) {
  if (IsUtf8(bytes)) {
    (*j)[name] = bytes;
  } else {
    (*j)[name + "_base64"] = Base64(bytes);
  }
}

json KvJson(const kv::KeyValue& kv, bool with_value) {
  json j;
  PutBytes(&j, "key", kv.key);
  if (with_value) PutBytes(&j, "value", kv.value);
  j["version"] = kv.version;
  return j;
}

void Print(const json& j) { std::cout << j.dump() << "\n"; }

}  // namespace

absl::Status ParseClientOptions(const std::string& endpoints, const std::string& timeout,
                                const std::string& session_token, ClientOptions* options) {
  for (absl::string_view e : absl::StrSplit(endpoints, ',', absl::SkipWhitespace())) {
    options->endpoints.emplace_back(e);
  }
  if (options->endpoints.empty()) {
    return absl::InvalidArgumentError(
        "no endpoints: pass --endpoints=HOST:PORT[,...] or set KVCTL_ENDPOINTS");
  }
  if (!absl::ParseDuration(timeout, &options->timeout) ||
      options->timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout '", timeout, "' is not a positive duration such as 500ms or 5s"));
  }
  options->session_token = session_token;
  return absl::OkStatus();
}

absl::Status ParseConsistency(const std::string& level, const std::string& max_staleness,
                              bool is_write, ReadOptions* read, WriteOptions* write) {
  if (level.empty()) return absl::OkStatus();
  if (is_write) {
    if (level == "majority") {
      write->consistency = WriteConsistency::kMajority;
    } else if (level == "all") {
      write->consistency = WriteConsistency::kAll;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--consistency '", level, "' is not a write level: majority|all"));
    }
    return absl::OkStatus();
  }
  if (level == "linearizable") {
    read->consistency = ReadConsistency::kLinearizable;
  } else if (level == "lease") {
    read->consistency = ReadConsistency::kLease;
  } else if (level == "bounded") {
    read->consistency = ReadConsistency::kBoundedStaleness;
    absl::Duration d;
    if (!absl::ParseDuration(max_staleness, &d) || d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(absl::StrCat("--max-staleness '", max_staleness,
                                                     "' is not a positive duration such as 500ms"));
    }
    read->max_staleness = d;
  } else if (level == "session") {
    read->consistency = ReadConsistency::kSession;
  } else if (level == "eventual") {
    read->consistency = ReadConsistency::kEventual;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--consistency '", level,
                     "' is not a read level: linearizable|lease|bounded|session|eventual"));
  }
  return absl::OkStatus();
}

absl::Status ParseBenchExtras(const std::string& duration, const std::string& pids,
                              BenchOptions* options) {
  if (!absl::ParseDuration(duration, &options->duration) ||
      options->duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--duration '", duration, "' is not a positive duration such as 10s"));
  }
  for (absl::string_view p : absl::StrSplit(pids, ',', absl::SkipWhitespace())) {
    int pid = 0;
    if (!absl::SimpleAtoi(p, &pid) || pid <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--server-pids: '", p, "' is not a PID"));
    }
    options->server_pids.push_back(pid);
  }
  if (options->keys == 0) return absl::InvalidArgumentError("--keys must be >= 1");
  if (options->concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  return absl::OkStatus();
}

void Output::Error(const absl::Status& s) const {
  if (json_) {
    json j;
    j["error"] = absl::StatusCodeToString(s.code());
    j["message"] = std::string(s.message());
    Print(j);
  } else {
    std::cerr << "Error: " << absl::StatusCodeToString(s.code()) << ": " << s.message() << "\n";
  }
}

void Output::KeyValue(const kv::KeyValue& kv, const std::string& token) const {
  if (json_) {
    json j = KvJson(kv, true);
    j["session_token"] = token;
    Print(j);
  } else {
    std::cout << kv.value;
    if (!kv.value.empty() && kv.value.back() != '\n' && IsUtf8(kv.value)) std::cout << "\n";
  }
}

void Output::Written(const char* what, uint64_t version, const std::string& token) const {
  if (json_) {
    Print(json{{"version", version}, {"session_token", token}});
  } else {
    std::cout << what << " version=" << version << "\n";
  }
}

void Output::Deleted(bool existed, uint64_t version, const std::string& token) const {
  if (json_) {
    Print(json{{"deleted", existed}, {"version", version}, {"session_token", token}});
  } else {
    std::cout << (existed ? "DELETED" : "NOT PRESENT") << " version=" << version << "\n";
  }
}

void Output::Cas(const CasResult& r, const std::string& token) const {
  if (json_) {
    json j{{"succeeded", r.succeeded}, {"session_token", token}};
    if (r.succeeded) j["version"] = r.version;
    if (r.current) j["current"] = KvJson(*r.current, true);
    Print(j);
    return;
  }
  if (r.succeeded) {
    std::cout << "OK version=" << r.version << "\n";
  } else if (r.current) {
    std::cout << "MISMATCH current_version=" << r.current->version << "\n";
  } else {
    std::cout << "MISMATCH key absent\n";
  }
}

void Output::Scan(const ScanPage& page, bool keys_only, const std::string& token) const {
  if (json_) {
    json kvs = json::array();
    for (const auto& kv : page.kvs) kvs.push_back(KvJson(kv, !keys_only));
    Print(json{{"kvs", kvs},
               {"continuation_token", Base64(page.continuation_token)},
               {"session_token", token}});
    return;
  }
  if (table_) {
    // For a terminal: every byte shown (C escapes for the unprintable), columns aligned.
    std::vector<std::string> keys, values;
    size_t key_width = 3, value_width = 5;
    for (const auto& kv : page.kvs) {
      keys.push_back(absl::CHexEscape(kv.key));
      values.push_back(keys_only ? "" : absl::CHexEscape(kv.value));
      key_width = std::max(key_width, keys.back().size());
      value_width = std::max(value_width, values.back().size());
    }
    value_width = std::min<size_t>(value_width, 60);
    if (keys_only) {
      std::printf("%-*s  %s\n", static_cast<int>(key_width), "KEY", "VERSION");
    } else {
      std::printf("%-*s  %-*s  %s\n", static_cast<int>(key_width), "KEY",
                  static_cast<int>(value_width), "VALUE", "VERSION");
    }
    for (size_t i = 0; i < page.kvs.size(); ++i) {
      std::string value =
          values[i].size() > value_width ? values[i].substr(0, value_width - 3) + "..." : values[i];
      if (keys_only) {
        std::printf("%-*s  %lu\n", static_cast<int>(key_width), keys[i].c_str(),
                    static_cast<unsigned long>(page.kvs[i].version));
      } else {
        std::printf("%-*s  %-*s  %lu\n", static_cast<int>(key_width), keys[i].c_str(),
                    static_cast<int>(value_width), value.c_str(),
                    static_cast<unsigned long>(page.kvs[i].version));
      }
    }
  } else {
    for (const auto& kv : page.kvs) {
      std::cout << kv.key;
      if (!keys_only) std::cout << "\t" << kv.value;
      std::cout << "\t(version " << kv.version << ")\n";
    }
  }
  if (!page.continuation_token.empty()) {
    std::cerr << "more: pass --continuation-token (JSON output gives it) or use --all\n";
  }
}

void Output::Bench(const BenchOptions& o, const BenchReport& r) const {
  const char* workload = o.workload == Workload::kPut   ? "put"
                         : o.workload == Workload::kGet ? "get"
                                                        : "mixed";
  if (json_) {
    json j{{"workload", workload},
           {"concurrency", o.concurrency},
           {"value_size", o.value_size},
           {"keys", o.keys},
           {"ops", r.ops},
           {"errors", r.errors},
           {"not_found", r.not_found},
           {"seconds", r.seconds},
           {"ops_per_sec", r.ops_per_sec},
           {"p50_us", r.p50_us},
           {"p99_us", r.p99_us},
           {"p999_us", r.p999_us},
           {"max_us", r.max_us},
           {"interrupted", r.interrupted}};
    if (r.server_cpu_us_per_op >= 0) {
      j["server_cpu_us_per_op"] = r.server_cpu_us_per_op;
      j["server_rss_mib"] = r.server_rss_mib;
    }
    if (!r.first_error.empty()) j["first_error"] = r.first_error;
    Print(j);
    return;
  }
  if (r.interrupted) std::printf("interrupted (Ctrl-C): the report covers what ran until then\n");
  std::printf("workload=%s concurrency=%d value_size=%zu keys=%lu\n", workload, o.concurrency,
              o.value_size, static_cast<unsigned long>(o.keys));
  std::printf("ops=%lu errors=%lu not_found=%lu seconds=%.2f\n", static_cast<unsigned long>(r.ops),
              static_cast<unsigned long>(r.errors), static_cast<unsigned long>(r.not_found),
              r.seconds);
  std::printf("throughput=%.0f ops/s  p50=%.0fus p99=%.0fus p999=%.0fus max=%.0fus\n",
              r.ops_per_sec, r.p50_us, r.p99_us, r.p999_us, r.max_us);
  if (r.server_cpu_us_per_op >= 0) {
    std::printf("server_cpu=%.1f us/op  server_rss=%.1f MiB\n", r.server_cpu_us_per_op,
                r.server_rss_mib);
  }
  if (!r.first_error.empty()) std::printf("first_error=%s\n", r.first_error.c_str());
}

namespace {
json MemberJson(const MemberInfo& m) {
  return {{"id", m.id},       {"address", m.address},         {"client_address", m.client_address},
          {"voter", m.voter}, {"match_index", m.match_index}, {"applied_index", m.applied_index},
          {"lag", m.lag},     {"reachable", m.reachable},     {"state", m.state}};
}
// Replication detail (match, lag, reachability) comes from the leader's view.
const NodeStatus* LeaderOf(const std::vector<NodeStatus>& nodes) {
  const NodeStatus* leader = nullptr;
  for (const auto& n : nodes) {
    if (n.role == "leader" && (!leader || n.term > leader->term)) leader = &n;
  }
  return leader;
}
}  // namespace

void Output::Members(const std::vector<NodeStatus>& nodes) const {
  const NodeStatus* view = LeaderOf(nodes);
  if (!view && !nodes.empty()) view = &nodes.front();  // no leader: what one node knows
  if (json_) {
    json members = json::array();
    if (view) {
      for (const auto& m : view->members) members.push_back(MemberJson(m));
    }
    json j{{"members", members}};
    if (view) j["as_seen_by"] = view->node_id;
    Print(j);
    return;
  }
  std::printf("%-5s %-8s %-22s %-22s %-10s %-8s %s\n", "ID", "ROLE", "PEER ADDRESS",
              "CLIENT ADDRESS", "MATCH", "LAG", "REACHABLE");
  if (!view) return;
  for (const auto& m : view->members) {
    std::printf("%-5lu %-8s %-22s %-22s %-10lu %-8lu %s\n", static_cast<unsigned long>(m.id),
                m.voter ? "voter" : "learner", m.address.c_str(), m.client_address.c_str(),
                static_cast<unsigned long>(m.match_index), static_cast<unsigned long>(m.lag),
                m.reachable ? "yes" : "no");
  }
}

void Output::Cluster(const std::vector<NodeStatus>& nodes,
                     const std::vector<std::string>& unreachable) const {
  const NodeStatus* leader = LeaderOf(nodes);
  if (json_) {
    json j{{"nodes", json::array()}, {"unreachable", unreachable}};
    for (const auto& n : nodes) {
      json members = json::array();
      for (const auto& m : n.members) members.push_back(MemberJson(m));
      j["nodes"].push_back({{"endpoint", n.endpoint},
                            {"node_id", n.node_id},
                            {"role", n.role},
                            {"term", n.term},
                            {"leader_id", n.leader_id},
                            {"commit_index", n.commit_index},
                            {"applied_index", n.applied_index},
                            {"first_index", n.first_index},
                            {"last_index", n.last_index},
                            {"fsyncs", n.fsyncs},
                            {"entries_persisted", n.entries_persisted},
                            {"members", members}});
    }
    if (leader) j["leader_id"] = leader->node_id;
    Print(j);
    return;
  }
  std::printf("%-5s %-22s %-13s %-6s %-7s %-10s %-10s %-8s %s\n", "NODE", "ENDPOINT", "ROLE",
              "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "MEMBERSHIP");
  for (const auto& n : nodes) {
    std::string lag = "-";
    std::string kind = "?";
    if (leader) {
      for (const auto& m : leader->members) {
        if (m.id != n.node_id) continue;
        lag = std::to_string(m.lag);
        kind = m.voter ? "voter" : "learner";
      }
    }
    std::printf("%-5lu %-22s %-13s %-6lu %-7lu %-10lu %-10lu %-8s %s\n",
                static_cast<unsigned long>(n.node_id), n.endpoint.c_str(), n.role.c_str(),
                static_cast<unsigned long>(n.term), static_cast<unsigned long>(n.leader_id),
                static_cast<unsigned long>(n.commit_index),
                static_cast<unsigned long>(n.applied_index), lag.c_str(), kind.c_str());
  }
  if (leader) {
    std::printf("members (leader %lu's view, by peer address):",
                static_cast<unsigned long>(leader->node_id));
    for (const auto& m : leader->members) {
      std::printf(" %lu%s@%s%s", static_cast<unsigned long>(m.id), m.voter ? "" : "(learner)",
                  m.address.c_str(), m.reachable ? "" : "[unreachable]");
    }
    std::printf("\n");
  } else {
    std::printf("no leader among the answering nodes\n");
  }
  for (const auto& u : unreachable) std::printf("unreachable: %s\n", u.c_str());
}

namespace {

std::string IdList(const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out.empty() ? "-" : out;
}

}  // namespace

void Output::Nodes(const std::vector<NodeInfo>& nodes) const {
  if (json_) {
    json j{{"nodes", json::array()}};
    for (const auto& n : nodes) {
      j["nodes"].push_back({{"id", n.id},
                            {"peer_address", n.peer_address},
                            {"client_address", n.client_address},
                            {"region", n.region},
                            {"zone", n.zone},
                            {"state", n.state},
                            {"down", n.down},
                            {"degraded", n.degraded},
                            {"leaders", n.leaders}});
    }
    Print(j);
    return;
  }
  std::printf("%-5s %-22s %-22s %-12s %-12s %-9s %-9s %s\n", "NODE", "CLIENT", "PEER", "REGION",
              "ZONE", "STATE", "HEALTH", "LEADERS");
  for (const auto& n : nodes) {
    std::printf("%-5lu %-22s %-22s %-12s %-12s %-9s %-9s %u\n", static_cast<unsigned long>(n.id),
                n.client_address.c_str(), n.peer_address.c_str(),
                n.region.empty() ? "-" : n.region.c_str(), n.zone.empty() ? "-" : n.zone.c_str(),
                n.state.c_str(),
                n.down       ? "down"
                : n.degraded ? "degraded"
                             : "ok",
                n.leaders);
  }
}

void Output::Groups(const std::vector<GroupInfo>& groups) const {
  if (json_) {
    json j{{"groups", json::array()}};
    for (const auto& g : groups) {
      j["groups"].push_back({{"id", g.id},
                             {"voters", g.voters},
                             {"learners", g.learners},
                             {"generation", g.generation},
                             {"conf_version", g.conf_version},
                             {"hosted_here", g.hosted_here},
                             {"leader_id", g.leader_id},
                             {"term", g.term},
                             {"applied_index", g.applied_index},
                             {"quiesced", g.quiesced},
                             {"missing_on", g.missing_on}});
    }
    Print(j);
    return;
  }
  std::printf("%-7s %-14s %-10s %-6s %-7s %-6s %-10s %s\n", "GROUP", "VOTERS", "LEARNERS", "EPOCH",
              "LEADER", "TERM", "APPLIED", "STATE");
  for (const auto& g : groups) {
    std::string epoch = std::to_string(g.generation) + "." + std::to_string(g.conf_version);
    std::string leader = g.hosted_here ? std::to_string(g.leader_id) : "-";
    std::string term = g.hosted_here ? std::to_string(g.term) : "-";
    std::string applied = g.hosted_here ? std::to_string(g.applied_index) : "-";
    std::string state = !g.hosted_here ? "elsewhere" : g.quiesced ? "quiet" : "active";
    if (!g.missing_on.empty()) state += " (no replica on " + IdList(g.missing_on) + ")";
    std::printf("%-7lu %-14s %-10s %-6s %-7s %-6s %-10s %s\n", static_cast<unsigned long>(g.id),
                IdList(g.voters).c_str(), IdList(g.learners).c_str(), epoch.c_str(), leader.c_str(),
                term.c_str(), applied.c_str(), state.c_str());
  }
}

void Output::Keyspaces(const std::vector<KeyspaceInfo>& keyspaces, bool with_shards, bool one,
                       const std::map<uint64_t, std::string>* placement) const {
  auto placement_of = [placement](uint64_t shard) {
    auto it = placement->find(shard);
    return it == placement->end() ? std::string("ok") : it->second;
  };
  if (json_) {
    json j{{"keyspaces", json::array()}};
    for (const auto& k : keyspaces) {
      json shards = json::array();
      for (const auto& s : k.shards) {
        json shard{{"shard_id", s.shard_id},         {"replicas", s.replicas},
                   {"leader_id", s.leader_id},       {"generation", s.generation},
                   {"conf_version", s.conf_version}, {"approximate_bytes", s.approximate_bytes}};
        PutBytes(&shard, "start", s.start);
        PutBytes(&shard, "end", s.end);
        if (!s.region.empty()) shard["region"] = s.region;
        if (placement) shard["placement"] = placement_of(s.shard_id);
        shards.push_back(std::move(shard));
      }
      j["keyspaces"].push_back({{"id", k.id},
                                {"name", k.name},
                                {"strategy", k.strategy},
                                {"regions", k.regions},
                                {"replicas", k.replicas},
                                {"shards", std::move(shards)}});
    }
    Print(one && keyspaces.size() == 1 ? j["keyspaces"][0] : j);
    return;
  }
  if (!with_shards) {
    std::printf("%-20s %-5s %-8s %-7s %-9s %s\n", "KEYSPACE", "ID", "STRATEGY", "SHARDS",
                "REPLICAS", "REGIONS");
    for (const auto& k : keyspaces) {
      std::string regions;
      for (const auto& r : k.regions) regions += (regions.empty() ? "" : ",") + r;
      std::printf("%-20s %-5lu %-8s %-7zu %-9u %s\n", k.name.c_str(),
                  static_cast<unsigned long>(k.id), k.strategy.c_str(), k.shards.size(), k.replicas,
                  regions.empty() ? "-" : regions.c_str());
    }
    return;
  }
  for (const auto& k : keyspaces) {
    std::printf("keyspace %s (id %lu, %s, %u replicas)\n", k.name.c_str(),
                static_cast<unsigned long>(k.id), k.strategy.c_str(), k.replicas);
    std::printf("%-7s %-20s %-20s %-12s %-7s %-6s %-10s%s\n", "SHARD", "START", "END", "REPLICAS",
                "LEADER", "EPOCH", "BYTES", placement ? " PLACEMENT" : "");
    for (const auto& s : k.shards) {
      auto shown = [](const std::string& b, const char* open) {
        if (b.empty()) return std::string(open);
        return IsUtf8(b) ? b : "base64:" + Base64(b);
      };
      std::string epoch = std::to_string(s.generation) + "." + std::to_string(s.conf_version);
      std::printf("%-7lu %-20s %-20s %-12s %-7s %-6s %-10lu%s\n",
                  static_cast<unsigned long>(s.shard_id), shown(s.start, "(start)").c_str(),
                  shown(s.end, "(end)").c_str(), IdList(s.replicas).c_str(),
                  s.leader_id ? std::to_string(s.leader_id).c_str() : "-", epoch.c_str(),
                  static_cast<unsigned long>(s.approximate_bytes),
                  placement ? (" " + placement_of(s.shard_id)).c_str() : "");
    }
  }
}

void Output::GroupsCreated(const std::vector<uint64_t>& ids) const {
  if (json_) {
    Print(json{{"group_ids", ids}});
    return;
  }
  std::printf("CREATED %zu group(s): %s\n", ids.size(), IdList(ids).c_str());
}

void Output::Moved(uint64_t shard_id, const std::vector<uint64_t>& voters) const {
  if (json_) {
    Print(json{{"shard_id", shard_id}, {"voters", voters}});
    return;
  }
  std::printf("MOVED shard %llu: voters %s\n", static_cast<unsigned long long>(shard_id),
              IdList(voters).c_str());
}

void Output::Drain(uint64_t node_id, const DrainStatus& d) const {
  if (json_) {
    Print(json{{"node_id", node_id},
               {"state", d.state},
               {"replicas_left", d.replicas_left},
               {"leaders_left", d.leaders_left},
               {"safe_to_remove", d.state == "draining" && d.replicas_left == 0}});
    return;
  }
  std::printf("NODE %llu %s: %u replicas and %u leaderships left%s\n",
              static_cast<unsigned long long>(node_id), d.state.c_str(), d.replicas_left,
              d.leaders_left,
              d.state == "draining" && d.replicas_left == 0 ? " (safe to remove)" : "");
}

void Output::Rebalance(const RebalanceInfo& r) const {
  if (json_) {
    json pending = json::array(), unplaceable = json::array();
    for (const auto& m : r.pending) {
      pending.push_back(
          {{"shard_id", m.shard_id}, {"from", m.from}, {"to", m.to}, {"reason", m.reason}});
    }
    for (const auto& u : r.unplaceable) {
      unplaceable.push_back(
          {{"shard_id", u.shard_id}, {"stuck_on", u.stuck_on}, {"reason", u.reason}});
    }
    Print(json{{"paused", r.paused},
               {"pending", pending},
               {"unplaceable", unplaceable},
               {"moves_done", r.moves_done},
               {"moving", r.moving},
               {"leader_transfers", r.leader_transfers},
               {"nodes_down", r.nodes_down},
               {"last_error", r.last_error}});
    return;
  }
  std::printf(
      "REBALANCE %s: %zu moves pending, %zu shards unplaceable, %llu nodes down; %llu moves and "
      "%llu leader transfers done here\n",
      r.paused ? "paused" : "running", r.pending.size(), r.unplaceable.size(),
      static_cast<unsigned long long>(r.nodes_down), static_cast<unsigned long long>(r.moves_done),
      static_cast<unsigned long long>(r.leader_transfers));
  for (const auto& m : r.pending) {
    std::printf("  move shard %llu: node %llu -> node %llu (%s)\n",
                static_cast<unsigned long long>(m.shard_id),
                static_cast<unsigned long long>(m.from), static_cast<unsigned long long>(m.to),
                m.reason.c_str());
  }
  for (const auto& u : r.unplaceable) {
    std::printf("  shard %llu cannot leave node %llu: %s\n",
                static_cast<unsigned long long>(u.shard_id),
                static_cast<unsigned long long>(u.stuck_on), u.reason.c_str());
  }
  if (!r.last_error.empty()) std::printf("  last failed move: %s\n", r.last_error.c_str());
}

void Output::SnapshotSaved(const SnapshotSummary& s) const {
  if (json_) {
    Print(json{{"path", s.path},
               {"shards", s.shards},
               {"keys", s.keys},
               {"bytes", s.bytes},
               {"sha256", s.sha256},
               {"attempts", s.attempts}});
    return;
  }
  std::printf("SAVED %s: %zu shards, %llu keys, %llu bytes, sha256 %s\n", s.path.c_str(), s.shards,
              static_cast<unsigned long long>(s.keys), static_cast<unsigned long long>(s.bytes),
              s.sha256.c_str());
}

void Output::SnapshotStatus(const BackupContents& c) const {
  std::string created = absl::FormatTime(
      "%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(c.created_unix_ms), absl::UTCTimeZone());
  if (json_) {
    Print(json{{"path", c.path},
               {"created", created},
               {"shards", c.shards},
               {"keys", c.keys},
               {"bytes", c.bytes},
               {"sha256", c.sha256},
               {"intact", true}});
    return;
  }
  std::printf("INTACT %s: saved %s, %zu shards, %llu keys, %llu bytes, sha256 %s\n", c.path.c_str(),
              created.c_str(), c.shards, static_cast<unsigned long long>(c.keys),
              static_cast<unsigned long long>(c.bytes), c.sha256.c_str());
}

void Output::Version(const char* version) const {
  if (json_) {
    Print(json{{"kvctl", version}});
    return;
  }
  std::printf("kvctl %s\n", version);
}

}  // namespace kv::kvctl
