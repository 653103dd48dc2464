#include "server/metrics.h"

#include <dirent.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "server/shard_merger.h"
#include "server/shard_splitter.h"

namespace kv::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

double ProcessCpuSeconds() {
  std::ifstream f("/proc/self/stat");
  std::string line;
  std::getline(f, line);
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ResidentBytes() {
  std::ifstream f("/proc/self/statm");
  double pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE));
}

double OpenFds() {
  double n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return std::max(0.0, n - 3);  // ".", "..", and the directory's own fd
}

constexpr size_t kCodes = 17;  // absl::StatusCode values 0..16

struct RpcSeries {
  prometheus::Histogram* latency = nullptr;
  std::array<prometheus::Counter*, kCodes> by_code{};
};

}  // namespace

struct Metrics::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  absl::Mutex rpc_mu;
  // Node-based: series pointers stay valid while the map grows.
  absl::node_hash_map<std::string, RpcSeries> rpc_series ABSL_GUARDED_BY(rpc_mu);
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();

  prometheus::Family<prometheus::Counter>& requests =
      BuildCounter()
          .Name("kv_requests_total")
          .Help("Client requests by method and status code")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& latency = BuildHistogram()
                                                           .Name("kv_request_duration_seconds")
                                                           .Help("Client request latency")
                                                           .Register(*registry);
  prometheus::Family<prometheus::Histogram>& log_append =
      BuildHistogram()
          .Name("kv_raft_log_append_seconds")
          .Help("Synced writes of Raft log entries and hard state (append + fsync)")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& apply_batch =
      BuildHistogram()
          .Name("kv_raft_apply_seconds")
          .Help("Apply batches of committed entries")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& gauges =
      BuildGauge().Name("kv_raft_state").Help("Raft group state").Register(*registry);
  prometheus::Family<prometheus::Counter>& counters =
      BuildCounter().Name("kv_raft_events_total").Help("Raft events by kind").Register(*registry);
  prometheus::Family<prometheus::Gauge>& groups =
      BuildGauge()
          .Name("kv_raft_groups")
          .Help("Raft groups hosted by this node: quiet (idle, not ticking) or active")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& messages =
      BuildCounter()
          .Name("kv_raft_messages_sent_total")
          .Help("Raft messages sent to peers, all groups; kind=beat: node liveness beats")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& snapshots =
      BuildCounter()
          .Name("kv_snapshots_sent_total")
          .Help(
              "Snapshots, all groups: streamed as leader (by=leader), asked of a caught-up "
              "replica (by=delegate), streamed for another node's leader (by=for_leader)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& splits =
      BuildCounter()
          .Name("kv_shard_splits_total")
          .Help("Keyspace shard splits this node carried out, by reason (command, size, load)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& merges =
      BuildCounter()
          .Name("kv_shard_merges_total")
          .Help(
              "Keyspace shard merges this node carried out (merged), and merges it settled "
              "that did not happen (aborted; thawed: the absorbed shard taking writes again)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& hot_keys =
      BuildCounter()
          .Name("kv_hot_keys_total")
          .Help("Times a shard over --split-load-qps was not split because one key carried it")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& role = BuildGauge()
                                                    .Name("kv_raft_role")
                                                    .Help("1 for this node's current Raft role")
                                                    .Register(*registry);
  prometheus::Family<prometheus::Gauge>& fsync = BuildGauge()
                                                     .Name("kv_raft_fsync_p99_seconds")
                                                     .Help("p99 of the last 256 fsyncs")
                                                     .Register(*registry);
  prometheus::Family<prometheus::Gauge>& apply = BuildGauge()
                                                     .Name("kv_raft_apply_p99_seconds")
                                                     .Help("p99 of the last 256 apply batches")
                                                     .Register(*registry);
  prometheus::Family<prometheus::Gauge>& rocksdb =
      BuildGauge().Name("kv_rocksdb").Help("RocksDB estimates").Register(*registry);
  prometheus::Family<prometheus::Gauge>& raft_log =
      BuildGauge()
          .Name("kv_raft_log")
          .Help(
              "The Raft log engine: segments and bytes on disk; writes, syncs, bytes written "
              "and segments deleted since start")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& breaker_state = BuildGauge()
                                                             .Name("kv_breaker_state")
                                                             .Help("0 closed, 1 half-open, 2 open")
                                                             .Register(*registry);
  prometheus::Family<prometheus::Counter>& breaker_transitions =
      BuildCounter()
          .Name("kv_breaker_transitions_total")
          .Help("Breaker state changes")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& heartbeat_age =
      BuildGauge()
          .Name("kv_raft_heartbeat_age_seconds")
          .Help("Follower: since the leader was last heard (-1: never since start)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& admission =
      BuildCounter()
          .Name("kv_admission_rejected_total")
          .Help("Requests refused: rate_limited, shed (in-flight cap), kill_switch")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& in_flight = BuildGauge()
                                                         .Name("kv_requests_in_flight")
                                                         .Help("Client requests in flight")
                                                         .Register(*registry);
  prometheus::Family<prometheus::Gauge>& kill_switch = BuildGauge()
                                                           .Name("kv_killswitch_mode")
                                                           .Help("0 off, 1 read-only, 2 halt")
                                                           .Register(*registry);
  prometheus::Family<prometheus::Counter>& cpu = BuildCounter()
                                                     .Name("kv_process_cpu_seconds_total")
                                                     .Help("CPU time of kvd")
                                                     .Register(*registry);
  prometheus::Family<prometheus::Gauge>& memory = BuildGauge()
                                                      .Name("kv_process_resident_memory_bytes")
                                                      .Help("Resident memory of kvd")
                                                      .Register(*registry);
  prometheus::Family<prometheus::Gauge>& fds = BuildGauge()
                                                   .Name("kv_process_open_fds")
                                                   .Help("Open file descriptors of kvd")
                                                   .Register(*registry);
  prometheus::Family<prometheus::Gauge>& health =
      BuildGauge()
          .Name("kv_health")
          .Help("1 for this node's health status (kvctl health): SERVING, DEGRADED, NOT_SERVING")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& disk =
      BuildGauge()
          .Name("kv_disk_bytes")
          .Help("The data directory's file system: free (for kvd) and total bytes")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& keyspace_shards =
      BuildGauge()
          .Name("kv_keyspace_shards")
          .Help("Shards of each keyspace with a replica on this node (hosted) and led by it (led)")
          .Register(*registry);
  // The series last set, so that a dropped keyspace's disappear.
  prometheus::Family<prometheus::Gauge>& placement =
      BuildGauge()
          .Name("kv_placement")
          .Help(
              "Placement as this node's metadata has it: moves pending, shards that cannot "
              "be placed (under-replicated), nodes marked down, rebalancer paused (1)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& rebalance_actions =
      BuildCounter()
          .Name("kv_rebalance_actions_total")
          .Help("Replica moves and leadership transfers the rebalancer carried out on this node")
          .Register(*registry);
  uint64_t moves_counted = 0, transfers_counted = 0;  // under mu
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> keyspace_series
      ABSL_GUARDED_BY(mu);

  absl::Mutex mu;
  // Counters mirror totals kept elsewhere: increment by the difference since the last sample.
  std::map<std::string, double> last ABSL_GUARDED_BY(mu);

  void Advance(prometheus::Family<prometheus::Counter>& family,
               const std::map<std::string, std::string>& labels, const std::string& key,
               double total) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    double& prev = last[key];
    if (total > prev) family.Add(labels).Increment(total - prev);
    prev = std::max(prev, total);
  }
};

Metrics::Metrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Metrics::~Metrics() = default;

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& listen) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError("cannot serve metrics on " + listen + ": " + e.what());
  }
  impl->exposer->RegisterCollectable(impl->registry);
  return std::unique_ptr<Metrics>(new Metrics(std::move(impl)));
}

std::pair<prometheus::Counter*, prometheus::Histogram*> Metrics::RpcSeriesFor(
    const char* method, absl::StatusCode code) {
  // Finding a labelled series in a family builds a label map and hashes it; once per method
  // (and per code) the series is remembered here, so the per-request cost is one lookup.
  auto code_index = static_cast<size_t>(code);
  if (code_index >= kCodes) code_index = static_cast<size_t>(absl::StatusCode::kUnknown);
  RpcSeries* series = nullptr;
  prometheus::Counter* counter = nullptr;
  {
    absl::ReaderMutexLock lock(&impl_->rpc_mu);
    auto it = impl_->rpc_series.find(absl::string_view(method));
    if (it != impl_->rpc_series.end()) {
      series = &it->second;
      counter = series->by_code[code_index];
    }
  }
  if (counter == nullptr) {
    absl::MutexLock lock(&impl_->rpc_mu);
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5};
    auto [it, added] = impl_->rpc_series.try_emplace(method);
    series = &it->second;
    if (added) series->latency = &impl_->latency.Add({{"method", method}}, kBuckets);
    counter = series->by_code[code_index] = &impl_->requests.Add(
        {{"method", method},
         {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code_index))}});
  }
  return {counter, series->latency};
}

void Metrics::ObserveRpc(const char* method, absl::StatusCode code, double seconds) {
  auto [counter, latency] = RpcSeriesFor(method, code);
  counter->Increment();
  latency->Observe(seconds);
}

void Metrics::CountRefused(const char* method, absl::StatusCode code) {
  RpcSeriesFor(method, code).first->Increment();
}

namespace {
const prometheus::Histogram::BucketBoundaries& StorageBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  return kBuckets;
}
}  // namespace

void Metrics::SetHealth(const std::string& status) {
  for (const char* s : {"SERVING", "DEGRADED", "NOT_SERVING"}) {
    impl_->health.Add({{"status", s}}).Set(status == s ? 1 : 0);
  }
}

void Metrics::SetDiskSpace(double free_bytes, double total_bytes) {
  impl_->disk.Add({{"stat", "free"}}).Set(free_bytes);
  impl_->disk.Add({{"stat", "total"}}).Set(total_bytes);
}

void Metrics::SetMerges(const MergeCounters& c) {
  auto& m = *impl_;
  absl::MutexLock lock(&m.mu);
  m.Advance(m.merges, {{"outcome", "merged"}}, "merges/merged", static_cast<double>(c.merged));
  m.Advance(m.merges, {{"outcome", "aborted"}}, "merges/aborted", static_cast<double>(c.aborted));
  m.Advance(m.merges, {{"outcome", "thawed"}}, "merges/thawed", static_cast<double>(c.thawed));
}

void Metrics::SetPlacement(const PlacementCounts& c) {
  auto& m = *impl_;
  m.placement.Add({{"kind", "moves_pending"}}).Set(c.moves_pending);
  m.placement.Add({{"kind", "unplaceable_shards"}}).Set(c.unplaceable_shards);
  m.placement.Add({{"kind", "nodes_down"}}).Set(c.nodes_down);
  m.placement.Add({{"kind", "paused"}}).Set(c.paused);
  absl::MutexLock lock(&m.mu);
  auto& moves = m.rebalance_actions.Add({{"kind", "move"}});
  auto& transfers = m.rebalance_actions.Add({{"kind", "leader_transfer"}});
  if (c.moves_done > m.moves_counted)
    moves.Increment(static_cast<double>(c.moves_done - m.moves_counted));
  if (c.leader_transfers > m.transfers_counted) {
    transfers.Increment(static_cast<double>(c.leader_transfers - m.transfers_counted));
  }
  m.moves_counted = c.moves_done;
  m.transfers_counted = c.leader_transfers;
}

void Metrics::SetKeyspaceShards(const std::map<std::string, KeyspaceShardCount>& counts) {
  auto& m = *impl_;
  absl::MutexLock lock(&m.mu);
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> now;
  for (const auto& [keyspace, c] : counts) {
    for (auto [kind, value] : {std::pair{"hosted", c.hosted}, std::pair{"led", c.led}}) {
      auto& g = m.keyspace_shards.Add({{"keyspace", keyspace}, {"kind", kind}});
      g.Set(value);
      now[{keyspace, kind}] = &g;
    }
  }
  for (const auto& [labels, gauge] : m.keyspace_series) {
    if (!now.contains(labels)) m.keyspace_shards.Remove(gauge);
  }
  m.keyspace_series = std::move(now);
}

void Metrics::ObserveLogAppend(double seconds) {
  impl_->log_append.Add({}, StorageBuckets()).Observe(seconds);
}

void Metrics::ObserveApply(double seconds) {
  impl_->apply_batch.Add({}, StorageBuckets()).Observe(seconds);
}

void Metrics::Refresh(const GroupStatus& s, const DriverCounters& driver,
                      const ControlState& control, control::BreakerRegistry& breakers,
                      const storage::Engine& engine, const SplitCounters& split_counts) {
  auto& m = *impl_;
  std::string group = std::to_string(s.group_id);
  auto gauge = [&](const char* what, double v) {
    m.gauges.Add({{"group_id", group}, {"state", what}}).Set(v);
  };
  gauge("term", static_cast<double>(s.term));
  gauge("commit_index", static_cast<double>(s.commit));
  gauge("applied_index", static_cast<double>(s.applied));
  gauge("last_index", static_cast<double>(s.last_index));
  gauge("leader_id", static_cast<double>(s.leader_id));
  m.heartbeat_age.Add({{"group_id", group}})
      .Set(s.heartbeat_age_ms < 0 ? -1 : s.heartbeat_age_ms / 1000.0);
  for (auto r : {raft::Role::kFollower, raft::Role::kPreCandidate, raft::Role::kCandidate,
                 raft::Role::kLeader}) {
    m.role.Add({{"group_id", group}, {"role", raft::RoleName(r)}}).Set(s.role == r ? 1 : 0);
  }
  m.fsync.Add({{"group_id", group}}).Set(s.fsync_p99_ms / 1000.0);
  m.apply.Add({{"group_id", group}}).Set(s.apply_p99_ms / 1000.0);
  m.rocksdb.Add({{"stat", "estimated_data_keys"}})
      .Set(static_cast<double>(engine.EstimateKeys(storage::Column::kData)));
  m.rocksdb.Add({{"stat", "size_bytes"}}).Set(static_cast<double>(engine.ApproximateSizeBytes()));
  const storage::LogEngineStats log = engine.raft_log().stats();
  for (auto [stat, v] : {std::pair{"segments", log.segments},
                         {"disk_bytes", log.disk_bytes},
                         {"writes", log.writes},
                         {"syncs", log.syncs},
                         {"bytes_written", log.bytes_written},
                         {"segments_deleted", log.segments_deleted}}) {
    m.raft_log.Add({{"stat", stat}}).Set(static_cast<double>(v));
  }
  const auto listed = breakers.List();
  for (const auto& b : listed) {
    double v = b.state == control::BreakerState::kClosed     ? 0
               : b.state == control::BreakerState::kHalfOpen ? 1
                                                             : 2;
    m.breaker_state.Add({{"name", b.name}}).Set(v);
  }
  m.groups.Add({{"state", "quiet"}}).Set(static_cast<double>(driver.quiesced));
  m.groups.Add({{"state", "active"}}).Set(static_cast<double>(driver.groups - driver.quiesced));
  m.in_flight.Add({}).Set(static_cast<double>(control.in_flight()));
  m.kill_switch.Add({}).Set(static_cast<double>(control.mode()));
  m.memory.Add({}).Set(ResidentBytes());
  m.fds.Add({}).Set(OpenFds());
  absl::MutexLock lock(&m.mu);
  auto event = [&](const char* kind, double total) {
    m.Advance(m.counters, {{"group_id", group}, {"event", kind}}, std::string("raft/") + kind,
              total);
  };
  for (const auto& b : listed) {
    m.Advance(m.breaker_transitions, {{"name", b.name}}, "breaker/" + b.name,
              static_cast<double>(b.transitions));
  }
  event("proposals", static_cast<double>(s.proposals));
  event("leader_changes", static_cast<double>(s.leader_changes));
  event("fsyncs", static_cast<double>(s.fsyncs));
  event("entries_persisted", static_cast<double>(s.entries_persisted));
  event("snapshots_sent", static_cast<double>(s.snapshots_sent));
  event("snapshots_installed", static_cast<double>(s.snapshots_installed));
  event("peer_refused", static_cast<double>(s.peer_refused));
  m.Advance(m.admission, {{"reason", "rate_limited"}}, "rate_limited",
            static_cast<double>(control.rate_limited()));
  m.Advance(m.admission, {{"reason", "shed"}}, "shed", static_cast<double>(control.shed()));
  m.Advance(m.admission, {{"reason", "kill_switch"}}, "kill_switch",
            static_cast<double>(control.refused_by_kill_switch()));
  m.Advance(m.cpu, {}, "cpu", ProcessCpuSeconds());
  m.Advance(m.messages, {{"kind", "raft"}}, "messages/raft",
            static_cast<double>(driver.messages_sent - driver.beats_sent));
  m.Advance(m.messages, {{"kind", "beat"}}, "messages/beat",
            static_cast<double>(driver.beats_sent));
  m.Advance(m.snapshots, {{"by", "leader"}}, "snapshots/leader",
            static_cast<double>(driver.snapshots_sent));
  m.Advance(m.snapshots, {{"by", "delegate"}}, "snapshots/delegate",
            static_cast<double>(driver.snapshots_delegated));
  m.Advance(m.snapshots, {{"by", "for_leader"}}, "snapshots/for_leader",
            static_cast<double>(driver.snapshots_sent_for_leader));
  m.Advance(m.splits, {{"reason", "command"}}, "splits/command",
            static_cast<double>(split_counts.by_command));
  m.Advance(m.splits, {{"reason", "size"}}, "splits/size",
            static_cast<double>(split_counts.by_size));
  m.Advance(m.splits, {{"reason", "load"}}, "splits/load",
            static_cast<double>(split_counts.by_load));
  m.Advance(m.hot_keys, {}, "hot_keys", static_cast<double>(split_counts.hot_keys));
}

}  // namespace kv::server
