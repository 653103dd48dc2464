// kvctl's argument interpretation and its two output formats (text for people, JSON for scripts).
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "client/kvctl/bench.h"
#include "kv/admin.h"
#include "kv/client.h"

namespace kv::kvctl {

absl::Status ParseClientOptions(const std::string& endpoints, const std::string& timeout,
                                const std::string& session_token, ClientOptions* options);
// Read levels: linearizable|lease|bounded|session|eventual; write levels: majority|all.
absl::Status ParseConsistency(const std::string& level, const std::string& max_staleness,
                              bool is_write, ReadOptions* read, WriteOptions* write);
absl::Status ParseBenchExtras(const std::string& duration, const std::string& pids,
                              BenchOptions* options);

// What `kvctl snapshot status` found in a backup file.
struct BackupContents {
  std::string path, sha256;
  int64_t created_unix_ms = 0;
  size_t shards = 0;
  uint64_t keys = 0, bytes = 0;
};

class Output {
 public:
  // `table`: listings as aligned columns with a header (the listing commands' text output
  // already is one; a scan's becomes one, bytes escaped for a terminal).
  explicit Output(bool json, bool table = false) : json_(json), table_(table) {}
  void Error(const absl::Status& s) const;
  void KeyValue(const kv::KeyValue& kv, const std::string& token) const;
  void Written(const char* what, uint64_t version, const std::string& token) const;
  void Deleted(bool existed, uint64_t version, const std::string& token) const;
  void Cas(const CasResult& r, const std::string& token) const;
  void Scan(const ScanPage& page, bool keys_only, const std::string& token) const;
  void Bench(const BenchOptions& options, const BenchReport& report) const;
  void Cluster(const std::vector<NodeStatus>& nodes,
               const std::vector<std::string>& unreachable) const;
  void Nodes(const std::vector<NodeInfo>& nodes) const;
  // The members of the cluster as its leader sees them (or, without one, the first answer).
  void Members(const std::vector<NodeStatus>& nodes) const;
  void Groups(const std::vector<GroupInfo>& groups) const;
  void GroupsCreated(const std::vector<uint64_t>& ids) const;
  void Version(const char* version) const;
  void SnapshotSaved(const SnapshotSummary& s) const;
  void Moved(uint64_t shard_id, const std::vector<uint64_t>& voters) const;
  void Drain(uint64_t node_id, const DrainStatus& d) const;
  void Rebalance(const RebalanceInfo& r) const;
  void SnapshotStatus(const BackupContents& c) const;
  // Keyspaces: a list, or with every shard (`with_shards`); JSON: {"keyspaces": [...]}, or the
  // keyspace object itself for a command about one keyspace (`one`). `placement`: what the
  // rebalancer plans for each shard (a move, or why it cannot be placed), shown when given.
  void Keyspaces(const std::vector<KeyspaceInfo>& keyspaces, bool with_shards, bool one = false,
                 const std::map<uint64_t, std::string>* placement = nullptr) const;

 private:
  bool json_;
  bool table_;
};

}  // namespace kv::kvctl
