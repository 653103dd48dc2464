// kvctl: the command-line client of kvstore.
// Exit codes: 0 ok, 1 not found or compare-and-swap mismatch, 2 usage error, 3 server or network
// error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client/channel.h"
#include "client/kvctl/bench.h"
#include "client/kvctl/completion.h"
#include "client/kvctl/control_commands.h"
#include "client/kvctl/output.h"
#include "kv/admin.h"
#include "kv/client.h"
#include "storage/backup_archive.h"
#include "storage/backup_file.h"

namespace {

using kv::kvctl::Output;
using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitNotFound = 1;
constexpr int kExitUsage = 2;
constexpr int kExitError = 3;

struct Globals {
  std::string endpoints;
  std::string timeout = "5s";
  std::string output = "text";
  std::string consistency;
  std::string max_staleness = "500ms";
  std::string session_token;
  std::string keyspace;
  bool spread_reads = false;
};

int Fail(const Output& out, const absl::Status& s) {
  out.Error(s);
  if (absl::IsNotFound(s)) return kExitNotFound;
  // The server rejected what the user typed: a usage error, not a failure of the store.
  if (absl::IsInvalidArgument(s)) return kExitUsage;
  return kExitError;
}

std::string ReadStdin() {
  std::cin >> std::noskipws;
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

// What the rebalancer plans for each shard it would touch, as the answering node sees it; nullopt
// when it cannot say (the shard list is shown without it).
std::optional<std::map<uint64_t, std::string>> PlacementByShard(kv::AdminClient& admin) {
  auto r = admin.Rebalance(kv::AdminClient::RebalanceAction::kStatus);
  if (!r.ok()) return std::nullopt;
  std::map<uint64_t, std::string> out;
  for (const auto& m : r->pending) {
    out[m.shard_id] = absl::StrCat("move ", m.from, "->", m.to, " (", m.reason, ")");
  }
  for (const auto& u : r->unplaceable) {
    out[u.shard_id] = absl::StrCat("under-replicated: stuck on node ", u.stuck_on);
  }
  return out;
}

// A one-line secret from a file, trimmed.
absl::Status ReadTokenFile(const std::string& path, const char* flag, std::string* token) {
  std::ifstream f(path);
  if (!f) return absl::InvalidArgumentError(absl::StrCat("cannot read ", flag, " ", path));
  std::getline(f, *token);
  while (!token->empty() && std::isspace(static_cast<unsigned char>(token->back()))) {
    token->pop_back();
  }
  return absl::OkStatus();
}

// The admin token (for control changes and membership) and this client's own token: files win
// over the environment.
absl::Status ReadTokens(const std::string& admin_file, const std::string& auth_file,
                        std::string* admin_token, std::string* auth_token) {
  if (const char* env = std::getenv("KVCTL_ADMIN_TOKEN")) *admin_token = env;
  if (const char* env = std::getenv("KVCTL_AUTH_TOKEN")) *auth_token = env;
  if (!admin_file.empty()) {
    if (auto s = ReadTokenFile(admin_file, "--admin-token-file", admin_token); !s.ok()) return s;
  }
  if (!auth_file.empty()) {
    if (auto s = ReadTokenFile(auth_file, "--auth-token-file", auth_token); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Globals g;
  if (const char* env = std::getenv("KVCTL_ENDPOINTS")) g.endpoints = env;
  if (const char* env = std::getenv("KVCTL_KEYSPACE")) g.keyspace = env;
  std::string control_endpoints, admin_token_file;
  if (const char* env = std::getenv("KVCTL_CONTROL_ENDPOINTS")) control_endpoints = env;

  CLI::App app{"kvctl: command-line client of kvstore"};
  app.require_subcommand(1);
  // Global flags anywhere on the line: a subcommand hands options it does not know to kvctl.
  app.fallthrough();
  app.add_option("--endpoints", g.endpoints,
                 "Comma-separated host:port of kvd nodes (or $KVCTL_ENDPOINTS)");
  app.add_option("--timeout", g.timeout, "Deadline of each command, e.g. 500ms, 5s")
      ->capture_default_str();
  app.add_option("--output,-o", g.output,
                 "Output format: text, json, or table (listings as aligned columns)")
      ->check(CLI::IsMember({"text", "json", "table"}))
      ->capture_default_str();
  app.add_option("--control-endpoints", control_endpoints,
                 "Comma-separated control ports (or $KVCTL_CONTROL_ENDPOINTS)");
  app.add_option("--admin-token-file", admin_token_file,
                 "File with the admin token for control changes, membership and leader transfer "
                 "(or $KVCTL_ADMIN_TOKEN)");
  app.add_option("--keyspace", g.keyspace,
                 "Keyspace of the keys (or $KVCTL_KEYSPACE; default: the default keyspace)");
  app.add_flag("--spread-reads", g.spread_reads,
               "Send reads to the endpoints in turn instead of the leader (followers serve "
               "linearizable reads by a ReadIndex round through the leader); writes still go "
               "to the leader");
  app.add_option("--session-token", g.session_token,
                 "Continue a session: a token printed by an earlier command (--output json)");
  kv::TlsOptions tls;
  if (const char* env = std::getenv("KVCTL_CACERT")) tls.ca_file = env;
  if (const char* env = std::getenv("KVCTL_CERT")) tls.cert_file = env;
  if (const char* env = std::getenv("KVCTL_KEY")) tls.key_file = env;
  std::string auth_token_file;
  app.add_option("--cacert", tls.ca_file,
                 "PEM CA that signed the servers' certificates: use TLS (or $KVCTL_CACERT)");
  app.add_option("--cert", tls.cert_file, "PEM client certificate for mTLS (or $KVCTL_CERT)");
  app.add_option("--key", tls.key_file, "PEM key of --cert (or $KVCTL_KEY)");
  app.add_option("--server-name", tls.server_name,
                 "Name the server certificate must carry, if not the endpoint's host");
  app.add_option("--auth-token-file", auth_token_file,
                 "File with this client's bearer token (kvd --client-tokens-file; or "
                 "$KVCTL_AUTH_TOKEN)");

  std::string key, value;
  bool has_value = false;
  auto* get = app.add_subcommand("get", "Read one key");
  get->add_option("key", key, "Key")->required();
  get->add_option("--consistency", g.consistency,
                  "linearizable|lease|bounded|session|eventual (default linearizable)");
  get->add_option("--max-staleness", g.max_staleness, "Bound for --consistency=bounded");

  auto* put =
      app.add_subcommand("put", "Write one key; without VALUE, the value is read from stdin");
  put->add_option("key", key, "Key")->required();
  put->add_option("value", value, "Value (omit to read binary data from stdin)");
  put->add_option("--consistency", g.consistency, "majority|all (default majority)");

  auto* del = app.add_subcommand("del", "Delete one key");
  del->add_option("key", key, "Key")->required();
  del->add_option("--consistency", g.consistency, "majority|all (default majority)");

  std::string prefix, start, end, token;
  uint32_t limit = 0;
  bool keys_only = false, all_pages = false;
  auto* scan = app.add_subcommand("scan", "List keys of a range [start, end) or with a prefix");
  scan->add_option("--prefix", prefix, "Keys starting with this prefix");
  scan->add_option("--start", start, "First key (inclusive)");
  scan->add_option("--end", end, "Last key (exclusive); empty = no bound");
  scan->add_option("--limit", limit, "Pairs per page (server default 1000)");
  scan->add_option(
      "--continuation-token", token,
      "Resume a scan: the continuation_token an earlier page printed (-o json), as is");
  scan->add_flag("--keys-only", keys_only, "Print keys and versions only");
  scan->add_flag("--all", all_pages, "Follow continuation tokens to the end of the range");
  scan->add_option("--consistency", g.consistency,
                   "linearizable|lease|bounded|session|eventual (default linearizable)");
  scan->add_option("--max-staleness", g.max_staleness, "Bound for --consistency=bounded");

  uint64_t expect_version = 0;
  bool expect_absent = false;
  auto* cas = app.add_subcommand(
      "cas", "Compare-and-swap: write VALUE only if KEY has the expected version, or is absent");
  cas->add_option("key", key, "Key")->required();
  cas->add_option("value", value, "New value (omit to read it from stdin)");
  auto* ev = cas->add_option("--expect-version", expect_version, "Version the key must have");
  auto* ea = cas->add_flag("--expect-absent", expect_absent, "The key must not exist");
  ev->excludes(ea);
  cas->add_option("--consistency", g.consistency, "majority|all (default majority)");

  kv::kvctl::BenchOptions bo;
  std::string workload = "put", duration = "10s", pids;
  auto* bench = app.add_subcommand("bench", "Load generator: throughput and latency");
  bench->add_option("--workload", workload, "put|get|mixed")
      ->check(CLI::IsMember({"put", "get", "mixed"}))
      ->capture_default_str();
  bench->add_option("--keys", bo.keys, "Distinct keys")->capture_default_str();
  bench->add_option("--key-size", bo.key_size, "Key bytes")->capture_default_str();
  bench->add_option("--value-size", bo.value_size, "Value bytes")->capture_default_str();
  bench->add_option("--concurrency,-c", bo.concurrency, "Requests in flight")
      ->capture_default_str();
  bench->add_option("--duration", duration, "Run time, e.g. 10s")->capture_default_str();
  bench->add_option("--ops", bo.ops, "Stop after this many operations (overrides --duration)");
  bench->add_option("--read-fraction", bo.read_fraction, "Share of gets in the mixed workload")
      ->capture_default_str();
  bench->add_flag("!--no-load", bo.load_keys, "get/mixed: do not write the keys first");
  bench->add_flag("!--quiet", bo.progress, "No progress line every second (on stderr)");
  bench->add_option("--server-pids", pids, "PIDs of local kvd processes: report their CPU/op");
  bench->add_option("--consistency", g.consistency, "Read or write consistency level");
  bench->add_option("--max-staleness", g.max_staleness, "Bound for --consistency=bounded");

  auto* version = app.add_subcommand("version", "Print kvctl's version");
  std::string shell;
  auto* completion = app.add_subcommand("completion", "Print a shell completion script");
  completion->add_option("shell", shell, "bash")->required()->check(CLI::IsMember({"bash"}));
  auto* cluster = app.add_subcommand("cluster", "Cluster information");
  auto* cluster_status =
      cluster->add_subcommand("status", "Members, roles, term, commit/applied index, leader, lag");
  cluster->require_subcommand(1);
  uint64_t member_id = 0;
  std::string member_address;
  auto* member = app.add_subcommand("member", "Membership changes (sent to the leader)");
  member->require_subcommand(1);
  auto* member_list =
      member->add_subcommand("list", "Members: voters and learners, addresses, replication lag");
  auto* member_add = member->add_subcommand("add", "Add a node as a learner (it catches up)");
  member_add->add_option("id", member_id, "Node id")->required();
  member_add->add_option("address", member_address, "Its peer address (kvd --peer-listen)")
      ->required();
  auto* member_promote = member->add_subcommand("promote", "Make a caught-up learner a voter");
  member_promote->add_option("id", member_id, "Node id")->required();
  auto* member_remove = member->add_subcommand("remove", "Remove a node from the cluster");
  member_remove->add_option("id", member_id, "Node id")->required();
  auto* node = app.add_subcommand("node", "Nodes of the cluster (metadata)");
  node->require_subcommand(1);
  auto* node_list = node->add_subcommand("list", "Nodes, their addresses, labels and state");
  uint64_t drain_id = 0;
  bool drain_undo = false;
  auto* node_drain = node->add_subcommand(
      "drain", "Move every replica and leadership off a node (admin); again: what is left");
  node_drain->add_option("id", drain_id, "Node id")->required();
  node_drain->add_flag("--undo", drain_undo, "End the drain: the node takes replicas again");
  auto* rebalance = app.add_subcommand("rebalance", "The rebalancer: placement carried out");
  rebalance->require_subcommand(1);
  auto* rebalance_pause = rebalance->add_subcommand("pause", "Stop starting moves (admin)");
  auto* rebalance_resume = rebalance->add_subcommand("resume", "Start moves again (admin)");
  auto* rebalance_status =
      rebalance->add_subcommand("status", "Paused?, the next moves, shards that cannot be placed");
  auto* group = app.add_subcommand("group", "Raft groups (until sharding: empty groups only)");
  group->require_subcommand(1);
  auto* group_list = group->add_subcommand("list", "Groups, their replicas and leaders");
  uint32_t group_count = 1, group_replicas = 0;
  uint64_t group_id = 0;
  auto* group_create = group->add_subcommand("create", "Create empty groups (admin)");
  group_create->add_option("--count", group_count, "How many (1-1000)")->capture_default_str();
  group_create->add_option("--replicas", group_replicas, "Voters per group (default 3)");
  auto* group_remove = group->add_subcommand("remove", "Remove a group from every node (admin)");
  group_remove->add_option("id", group_id, "Group id")->required();
  auto* keyspace = app.add_subcommand("keyspace", "Keyspaces: named, sharded key spaces");
  keyspace->require_subcommand(1);
  kv::KeyspaceSpec spec;
  std::string split_points, regions, keyspace_name;
  bool drop_force = false;
  auto* ks_create = keyspace->add_subcommand("create", "Create a keyspace (admin)");
  ks_create->add_option("name", spec.name, "Name: a-z, 0-9, '_', '-'")->required();
  ks_create->add_option("--strategy", spec.strategy, "range|hash|geo")
      ->check(CLI::IsMember({"range", "hash", "geo"}))
      ->capture_default_str();
  ks_create->add_option("--shards", spec.shards, "Hash: how many shards (default 8)");
  ks_create->add_option("--replicas", spec.replicas, "Replicas per shard (default 3)");
  ks_create->add_option("--split-points", split_points, "Range: initial split keys, e.g. a,m,t");
  ks_create->add_option("--regions", regions, "Geo: its regions, e.g. eu,us,ap");
  auto* ks_list = keyspace->add_subcommand("list", "Keyspaces");
  auto* ks_describe = keyspace->add_subcommand("describe", "A keyspace's shards and their spans");
  ks_describe->add_option("name", keyspace_name, "Keyspace")->required();
  auto* ks_drop = keyspace->add_subcommand("drop", "Drop a keyspace (admin; refused if not empty)");
  ks_drop->add_option("name", keyspace_name, "Keyspace")->required();
  ks_drop->add_flag("--force", drop_force, "Drop it even though it holds keys");
  auto* shards_list = app.add_subcommand("shards", "Every shard of every keyspace");
  auto* shard_cmd = app.add_subcommand("shard", "Shards of keyspaces");
  shard_cmd->require_subcommand(1);
  uint64_t shard_id = 0;
  std::string split_at;
  auto* shard_split = shard_cmd->add_subcommand("split", "Split a shard online (admin)");
  shard_split->add_option("shard", shard_id, "Shard id (kvctl keyspace describe)")->required();
  auto* split_at_option =
      shard_split->add_option("--at", split_at, "Split key (default: the middle of its keys)");
  auto* shard_merge = shard_cmd->add_subcommand(
      "merge", "Merge a shard of a range keyspace with the next one, online (admin)");
  shard_merge->add_option("shard", shard_id, "Shard id (kvctl keyspace describe)")->required();
  std::string snapshot_file;
  auto* snapshot = app.add_subcommand("snapshot", "Backups: save one, check one");
  snapshot->require_subcommand(1);
  auto* snapshot_save = snapshot->add_subcommand(
      "save",
      "Save a consistent backup of every shard to FILE (admin); kvd --restore-from FILE "
      "seeds a new cluster");
  snapshot_save->add_option("file", snapshot_file, "Backup file to write")->required();
  auto* snapshot_status =
      snapshot->add_subcommand("status", "Check a backup file offline: intact, and what it holds");
  snapshot_status->add_option("file", snapshot_file, "Backup file")
      ->required()
      ->check(CLI::ExistingFile);
  uint64_t move_from = 0, move_to = 0;
  auto* shard_move = shard_cmd->add_subcommand(
      "move", "Move a shard's replica from one node to another online (admin; joint consensus)");
  shard_move->add_option("shard", shard_id, "Shard id (kvctl shards)")->required();
  shard_move->add_option("--from", move_from, "Node that gives up its replica")->required();
  shard_move->add_option("--to", move_to, "Node that receives it")->required();
  uint64_t transfer_to = 0;
  auto* leader = app.add_subcommand("leader", "Leadership");
  leader->require_subcommand(1);
  auto* leader_transfer = leader->add_subcommand("transfer", "Hand leadership to another voter");
  leader_transfer->add_option("--to", transfer_to, "Target node id (default: most caught-up)");

  auto* health = app.add_subcommand("health", "Health of each node (control port): gray failure");
  std::string health_probe;
  health
      ->add_option("--probe", health_probe,
                   "Only the grpc.health.v1 check: live|ready; exit 0 when SERVING (container "
                   "health checks)")
      ->check(CLI::IsMember({"live", "ready"}));
  std::string breaker_name;
  auto* breakers = app.add_subcommand("breakers", "Circuit breakers of each node");
  breakers->add_subcommand("list", "List breakers and their states (the default)");
  auto* breakers_open = breakers->add_subcommand("force-open", "Force a breaker open");
  breakers_open->add_option("name", breaker_name, "Breaker name (see list)")->required();
  auto* breakers_closed = breakers->add_subcommand("force-closed", "Force a breaker closed");
  breakers_closed->add_option("name", breaker_name, "Breaker name")->required();
  auto* breakers_release = breakers->add_subcommand("release", "Release an override");
  breakers_release->add_option("name", breaker_name, "Breaker name")->required();
  auto* limits = app.add_subcommand("limits", "Cluster-wide rate limits and admission");
  limits->require_subcommand(1);
  auto* limits_get = limits->add_subcommand("get", "Show the limits in force");
  double per_client_rps = 0, per_client_burst = 0;
  uint32_t max_in_flight = 0;
  std::vector<std::string> method_rps;
  auto* limits_set = limits->add_subcommand("set", "Replace the limits (0 = unlimited)");
  limits_set->add_option("--per-client-rps", per_client_rps, "Requests/s per client identity");
  limits_set->add_option("--per-client-burst", per_client_burst, "Burst per client identity");
  limits_set->add_option("--method-rps", method_rps, "METHOD=RATE, node-wide (repeatable)");
  limits_set->add_option("--max-in-flight", max_in_flight, "Requests in flight per node");
  std::string ks_mode, ks_reason;
  auto* killswitch = app.add_subcommand("killswitch", "Cluster-wide kill switch");
  killswitch->require_subcommand(1);
  auto* ks_engage =
      killswitch->add_subcommand("engage", "Refuse writes (read-only) or all traffic");
  ks_engage->add_option("--mode", ks_mode, "read-only|halt")->required();
  ks_engage->add_option("--reason", ks_reason, "Why (recorded with who and when)")->required();
  auto* ks_release = killswitch->add_subcommand("release", "Let traffic in again");
  ks_release->add_option("--reason", ks_reason, "Why");
  killswitch->add_subcommand("status", "Mode, reason and history");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  has_value = !value.empty() || (put->count("value") + cas->count("value")) > 0;

  Output out(g.output == "json", g.output == "table");
  auto first = app.get_subcommands().front();
  if (first == version) {
    out.Version(KV_VERSION);
    return kExitOk;
  }
  if (first == completion) {
    std::cout << kv::kvctl::BashCompletion(app);
    return kExitOk;
  }
  if (snapshot_status->parsed()) {
    auto manifest = kv::storage::ReadBackup(snapshot_file);
    if (!manifest.ok()) return Fail(out, manifest.status());
    auto sha = kv::storage::Sha256OfFile(snapshot_file);
    if (!sha.ok()) return Fail(out, sha.status());
    kv::kvctl::BackupContents c;
    c.path = snapshot_file;
    c.sha256 = *sha;
    c.created_unix_ms = manifest->created_unix_ms();
    c.shards = static_cast<size_t>(manifest->files_size());
    for (const auto& f : manifest->files()) c.keys += f.shard().keys();
    std::error_code size_error;
    c.bytes = std::filesystem::file_size(snapshot_file, size_error);
    out.SnapshotStatus(c);
    return kExitOk;
  }
  std::string admin_token, auth_token;
  if (auto s = ReadTokens(admin_token_file, auth_token_file, &admin_token, &auth_token); !s.ok()) {
    out.Error(s);
    return kExitUsage;
  }
  if (auto credentials = kv::MakeChannelCredentials(tls); !credentials.ok()) {
    out.Error(credentials.status());
    return kExitUsage;
  }
  if (first == health || first == breakers || first == limits || first == killswitch) {
    kv::kvctl::ControlTarget t;
    for (absl::string_view e : absl::StrSplit(control_endpoints, ',', absl::SkipWhitespace())) {
      t.endpoints.emplace_back(e);
    }
    if (t.endpoints.empty()) {
      out.Error(absl::InvalidArgumentError(
          "no control endpoints: pass --control-endpoints=HOST:PORT[,...] or set "
          "KVCTL_CONTROL_ENDPOINTS"));
      return kExitUsage;
    }
    t.json = g.output == "json";
    absl::Duration timeout;
    if (absl::ParseDuration(g.timeout, &timeout)) t.timeout_s = absl::ToDoubleSeconds(timeout);
    t.admin_token = admin_token;
    t.tls = tls;
    if (first == health) {
      return health_probe.empty() ? kv::kvctl::Health(t) : kv::kvctl::HealthProbe(t, health_probe);
    }
    if (first == breakers) {
      std::string action = breakers_open->parsed()      ? "force-open"
                           : breakers_closed->parsed()  ? "force-closed"
                           : breakers_release->parsed() ? "release"
                                                        : "list";
      return kv::kvctl::Breakers(t, action, breaker_name);
    }
    if (limits_get->parsed()) return kv::kvctl::LimitsGet(t);
    if (limits_set->parsed()) {
      std::map<std::string, double> per_method;
      for (const auto& item : method_rps) {
        std::pair<std::string, std::string> kv_pair = absl::StrSplit(item, '=');
        double rate = 0;
        if (!absl::SimpleAtod(kv_pair.second, &rate)) {
          out.Error(absl::InvalidArgumentError("--method-rps takes METHOD=RATE, e.g. Put=100"));
          return kExitUsage;
        }
        per_method[kv_pair.first] = rate;
      }
      return kv::kvctl::LimitsSet(t, per_client_rps, per_client_burst, per_method, max_in_flight);
    }
    std::string action = ks_engage->parsed()    ? "engage"
                         : ks_release->parsed() ? "release"
                                                : "status";
    return kv::kvctl::KillSwitch(t, action, ks_mode, ks_reason);
  }
  kv::ClientOptions options;
  auto parsed = kv::kvctl::ParseClientOptions(g.endpoints, g.timeout, g.session_token, &options);
  if (!parsed.ok()) {
    out.Error(parsed);
    return kExitUsage;
  }
  auto sub = app.get_subcommands().front();
  options.keyspace = g.keyspace;
  options.spread_reads = g.spread_reads;
  if (sub == cluster || sub == member || sub == leader || sub == node || sub == group ||
      sub == keyspace || sub == shard_cmd || sub == shards_list || sub == snapshot ||
      sub == rebalance) {
    kv::AdminOptions admin_options;
    admin_options.endpoints = options.endpoints;
    admin_options.timeout = options.timeout;
    admin_options.admin_token = admin_token;
    admin_options.tls = tls;
    auto admin = kv::AdminClient::Connect(admin_options);
    if (!admin.ok()) {
      out.Error(admin.status());
      return kExitUsage;
    }
    if (cluster_status->parsed()) {
      std::vector<std::string> unreachable;
      auto nodes = (*admin)->Status(&unreachable);
      out.Cluster(nodes, unreachable);
      return nodes.empty() ? kExitError : kExitOk;
    }
    if (member_list->parsed()) {
      auto nodes = (*admin)->Status();
      out.Members(nodes);
      return nodes.empty() ? kExitError : kExitOk;
    }
    if (node_list->parsed()) {
      auto nodes = (*admin)->ListNodes();
      if (!nodes.ok()) return Fail(out, nodes.status());
      out.Nodes(*nodes);
      return kExitOk;
    }
    if (group_list->parsed()) {
      auto groups = (*admin)->ListGroups();
      if (!groups.ok()) return Fail(out, groups.status());
      out.Groups(*groups);
      return kExitOk;
    }
    if (group_create->parsed()) {
      auto ids = (*admin)->CreateGroups(group_count, group_replicas);
      if (!ids.ok()) return Fail(out, ids.status());
      out.GroupsCreated(*ids);
      return kExitOk;
    }
    if (ks_create->parsed()) {
      for (auto* list : {&split_points, &regions}) {
        if (list->empty()) continue;
        std::vector<std::string> items = absl::StrSplit(*list, ',');
        (list == &split_points ? spec.split_points : spec.regions) = std::move(items);
      }
      auto created = (*admin)->CreateKeyspace(spec);
      if (!created.ok()) return Fail(out, created.status());
      out.Keyspaces({*created}, /*with_shards=*/true, /*one=*/true);
      return kExitOk;
    }
    if (snapshot_save->parsed()) {
      auto saved = (*admin)->SaveSnapshot(snapshot_file, [](const kv::SnapshotProgress& p) {
        std::fprintf(stderr, "snapshot: shard %llu saved (%zu/%zu shards, %llu keys, %.1f MiB)\n",
                     static_cast<unsigned long long>(p.shard_id), p.shards_done, p.shards_total,
                     static_cast<unsigned long long>(p.keys),
                     static_cast<double>(p.bytes) / (1 << 20));
      });
      if (!saved.ok()) return Fail(out, saved.status());
      out.SnapshotSaved(*saved);
      return kExitOk;
    }
    if (node_drain->parsed()) {
      auto d = (*admin)->DrainNode(drain_id, drain_undo);
      if (!d.ok()) return Fail(out, d.status());
      out.Drain(drain_id, *d);
      return kExitOk;
    }
    if (rebalance_pause->parsed() || rebalance_resume->parsed() || rebalance_status->parsed()) {
      auto action = rebalance_pause->parsed()    ? kv::AdminClient::RebalanceAction::kPause
                    : rebalance_resume->parsed() ? kv::AdminClient::RebalanceAction::kResume
                                                 : kv::AdminClient::RebalanceAction::kStatus;
      auto r = (*admin)->Rebalance(action);
      if (!r.ok()) return Fail(out, r.status());
      out.Rebalance(*r);
      return kExitOk;
    }
    if (shard_move->parsed()) {
      auto voters = (*admin)->MoveReplica(shard_id, move_from, move_to);
      if (!voters.ok()) return Fail(out, voters.status());
      out.Moved(shard_id, *voters);
      return kExitOk;
    }
    if (shard_merge->parsed()) {
      uint64_t survivor = 0, absorbed = 0;
      auto after = (*admin)->MergeShard(shard_id, &survivor, &absorbed);
      if (!after.ok()) return Fail(out, after.status());
      out.Keyspaces({*after}, /*with_shards=*/true, /*one=*/true);
      return kExitOk;
    }
    if (shard_split->parsed()) {
      std::optional<std::string> at;
      if (split_at_option->count() > 0) at = split_at;
      uint64_t child = 0;
      auto after = (*admin)->SplitShard(shard_id, at, &child);
      if (!after.ok()) return Fail(out, after.status());
      out.Keyspaces({*after}, /*with_shards=*/true, /*one=*/true);
      return kExitOk;
    }
    if (shards_list->parsed()) {
      auto all = (*admin)->ListKeyspaces();
      if (!all.ok()) return Fail(out, all.status());
      auto placement = PlacementByShard(**admin);
      out.Keyspaces(*all, /*with_shards=*/true, /*one=*/false, placement ? &*placement : nullptr);
      return kExitOk;
    }
    if (ks_list->parsed()) {
      auto all = (*admin)->ListKeyspaces();
      if (!all.ok()) return Fail(out, all.status());
      out.Keyspaces(*all, /*with_shards=*/false);
      return kExitOk;
    }
    if (ks_describe->parsed()) {
      auto one = (*admin)->DescribeKeyspace(keyspace_name);
      if (!one.ok()) return Fail(out, one.status());
      auto placement = PlacementByShard(**admin);
      out.Keyspaces({*one}, /*with_shards=*/true, /*one=*/true, placement ? &*placement : nullptr);
      return kExitOk;
    }
    if (ks_drop->parsed()) {
      if (auto s = (*admin)->DropKeyspace(keyspace_name, drop_force); !s.ok()) return Fail(out, s);
      out.Written("DROPPED", 0, "");
      return kExitOk;
    }
    if (group_remove->parsed()) {
      if (auto s = (*admin)->RemoveGroup(group_id); !s.ok()) return Fail(out, s);
      out.Written("REMOVED", group_id, "");
      return kExitOk;
    }
    absl::StatusOr<uint64_t> r;
    if (member_add->parsed()) r = (*admin)->AddLearner(member_id, member_address);
    if (member_promote->parsed()) r = (*admin)->Promote(member_id);
    if (member_remove->parsed()) r = (*admin)->Remove(member_id);
    if (leader_transfer->parsed()) r = (*admin)->TransferLeader(transfer_to);
    if (!r.ok()) return Fail(out, r.status());
    out.Written(leader_transfer->parsed() ? "LEADER" : "OK", *r, "");
    return kExitOk;
  }
  bool is_write = sub == put || sub == del || sub == cas;
  kv::ReadOptions read;
  kv::WriteOptions write;
  if (auto s =
          kv::kvctl::ParseConsistency(g.consistency, g.max_staleness,
                                      sub == bench ? (workload == "put") : is_write, &read, &write);
      !s.ok()) {
    out.Error(s);
    return kExitUsage;
  }
  options.tls = tls;
  options.auth_token = auth_token;
  auto client = kv::Client::Connect(options);
  if (!client.ok()) {
    out.Error(client.status());
    return kExitUsage;
  }
  kv::Client& c = **client;

  if (sub == get) {
    auto r = c.Get(key, read);
    if (!r.ok()) return Fail(out, r.status());
    out.KeyValue(*r, c.session_token());
  } else if (sub == put) {
    if (!has_value) value = ReadStdin();
    auto r = c.Put(key, value, write);
    if (!r.ok()) return Fail(out, r.status());
    out.Written("OK", r->version, c.session_token());
  } else if (sub == del) {
    auto r = c.Delete(key, write);
    if (!r.ok()) return Fail(out, r.status());
    out.Deleted(r->existed, r->version, c.session_token());
  } else if (sub == cas) {
    if (!expect_absent && cas->count("--expect-version") == 0) {
      out.Error(absl::InvalidArgumentError("cas needs --expect-version N or --expect-absent"));
      return kExitUsage;
    }
    if (!expect_absent && expect_version == 0) {
      out.Error(absl::InvalidArgumentError(
          "--expect-version must be >= 1; use --expect-absent for a key that must not exist"));
      return kExitUsage;
    }
    if (!has_value) value = ReadStdin();
    auto r = c.CompareAndSwap(key, expect_absent ? 0 : expect_version, value, write);
    if (!r.ok()) return Fail(out, r.status());
    out.Cas(*r, c.session_token());
    return r->succeeded ? kExitOk : kExitNotFound;
  } else if (sub == scan) {
    // Printed in base64 (a token is binary), taken back the same way.
    std::string raw_token;
    if (!absl::Base64Unescape(token, &raw_token)) {
      return Fail(out, absl::InvalidArgumentError(
                           "--continuation-token: not a token printed by kvctl -o json scan"));
    }
    kv::ScanRequest req{start, end, prefix, limit, raw_token, keys_only};
    kv::ScanPage page;
    if (all_pages) {
      auto r = c.ScanAll(req, SIZE_MAX, read);
      if (!r.ok()) return Fail(out, r.status());
      page.kvs = *std::move(r);
    } else {
      auto r = c.Scan(req, read);
      if (!r.ok()) return Fail(out, r.status());
      page = *std::move(r);
    }
    out.Scan(page, keys_only, c.session_token());
  } else if (sub == bench) {
    bo.workload = workload == "put"   ? kv::kvctl::Workload::kPut
                  : workload == "get" ? kv::kvctl::Workload::kGet
                                      : kv::kvctl::Workload::kMixed;
    bo.read = read;
    bo.write = write;
    if (auto s = kv::kvctl::ParseBenchExtras(duration, pids, &bo); !s.ok()) {
      out.Error(s);
      return kExitUsage;
    }
    auto report = kv::kvctl::RunBench(c, bo);
    out.Bench(bo, report);
    return report.errors > 0 ? kExitError : kExitOk;
  }
  return kExitOk;
}
