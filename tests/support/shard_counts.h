// Test support for placement tests on real clusters: a hash keyspace and a client of it, and
// how its replicas and the cluster's shard leaderships are spread over the nodes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>

#include "kv/admin.h"
#include "tests/support/local_cluster.h"

namespace kv::testing {

// A hash keyspace of `shards` shards with 3 replicas each.
inline bool CreateHashKeyspace(AdminClient& admin, const std::string& name, uint32_t shards) {
  KeyspaceSpec spec;
  spec.name = name;
  spec.strategy = "hash";
  spec.shards = shards;
  spec.replicas = 3;
  return admin.CreateKeyspace(spec).ok();
}

// Options of a client of `keyspace` on every node, patient enough to ride out a failover.
inline ClientOptions KeyspaceClientOptions(const LocalCluster& cluster,
                                           const std::string& keyspace) {
  ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
  o.keyspace = keyspace;
  o.timeout = absl::Seconds(15);
  return o;
}

// Replicas per node over every shard of `keyspace`, as the answering node's metadata has them.
inline std::map<uint64_t, int> ReplicaCounts(AdminClient& admin, const std::string& keyspace) {
  std::map<uint64_t, int> counts;
  auto ks = admin.DescribeKeyspace(keyspace);
  if (!ks.ok()) return counts;
  for (const auto& shard : ks->shards) {
    for (uint64_t r : shard.replicas) ++counts[r];
  }
  return counts;
}

// Keyspace shards each running node leads, as each node itself reports (groups 0 and 1, which
// every member hosts, are not keyspace shards). A node that does not answer counts -1.
inline std::map<uint64_t, int> LeaderCounts(LocalCluster& cluster) {
  std::map<uint64_t, int> counts;
  for (uint64_t n = 1; n <= cluster.size(); ++n) {
    if (!cluster.node(n).running()) continue;
    auto groups = cluster.NewAdminFor(n)->ListGroups();
    if (!groups.ok()) {
      counts[n] = -1;
      continue;
    }
    int led = 0;
    for (const auto& g : *groups) {
      if (g.id > 1 && g.hosted_here && g.leader_id == n) ++led;
    }
    counts[n] = led;
  }
  return counts;
}

// Largest minus smallest count over `nodes` (a node missing from `counts` counts 0).
inline int Spread(const std::map<uint64_t, int>& counts, uint64_t first_node, uint64_t last_node) {
  int lo = 1 << 30, hi = -1;
  for (uint64_t n = first_node; n <= last_node; ++n) {
    auto it = counts.find(n);
    int c = it == counts.end() ? 0 : it->second;
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  return hi - lo;
}

}  // namespace kv::testing
