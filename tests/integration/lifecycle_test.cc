// Node lifecycle on real clusters: a node that stays down past --dead-node-timeout has its
// replicas re-created elsewhere and is refilled when it returns; a shard with nowhere to go
// stays under-replicated and says so; a degraded node leads no keyspace shard and leaders are
// spread; two nodes added to a loaded 3-node cluster of 32 shards receive replicas and
// leaderships until every node is within one of even. Every acknowledged write is read back.
// Every wait is bounded.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sharding/key_codec.h"
#include "storage/engine.h"
#include "tests/support/http_get.h"
#include "tests/support/local_cluster.h"
#include "tests/support/shard_counts.h"

namespace kv {
namespace {

using kv::testing::CreateHashKeyspace;
using kv::testing::KeyspaceClientOptions;
using kv::testing::LeaderCounts;
using kv::testing::LocalCluster;
using kv::testing::ReplicaCounts;
using kv::testing::Spread;

std::string Show(const std::map<uint64_t, int>& counts) {
  return absl::StrJoin(counts, " ", [](std::string* out, const auto& c) {
    absl::StrAppend(out, "n", c.first, "=", c.second);
  });
}

// Writes keys PREFIX0, PREFIX1, ... ("w-0", ... by default) until stopped (or `limit` writes),
// remembering what was acknowledged and each write's latency.
class Writer {
 public:
  Writer(const ClientOptions& options, int limit, std::string prefix = "w-") {
    thread_ = std::thread([this, options, limit, prefix] {
      auto client = *Client::Connect(options);
      for (int i = 0; i < limit && !stop_.load(); ++i) {
        std::string key = absl::StrCat(prefix, i);
        absl::Time began = absl::Now();
        auto put = client->Put(key, std::string(256, 'v'));
        double ms = absl::ToDoubleMilliseconds(absl::Now() - began);
        std::lock_guard<std::mutex> lock(mu_);
        if (put.ok()) {
          acked_.push_back(key);
          latencies_ms_.push_back(ms);
        } else {
          ++failed_;
        }
      }
    });
  }
  ~Writer() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  size_t acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_.size();
  }
  // Latencies of the writes acknowledged from `from` on (an index into the acknowledged ones).
  std::vector<double> LatenciesSince(size_t from) {
    std::lock_guard<std::mutex> lock(mu_);
    return {
        latencies_ms_.begin() + static_cast<std::ptrdiff_t>(std::min(from, latencies_ms_.size())),
        latencies_ms_.end()};
  }
  std::vector<std::string> acked_keys() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  int failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> acked_;
  std::vector<double> latencies_ms_;
  int failed_ = 0;
  std::thread thread_;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Reads every key back, on four clients at once.
void ExpectAllReadBack(const ClientOptions& options, const std::vector<std::string>& keys) {
  constexpr size_t kReaders = 4;
  std::atomic<int> missing{0};
  std::mutex mu;
  std::string first_missing;
  std::vector<std::thread> readers;
  for (size_t r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      auto client = *Client::Connect(options);
      for (size_t i = r; i < keys.size(); i += kReaders) {
        auto got = client->Get(keys[i]);
        if (got.ok() && got->value == std::string(256, 'v')) continue;
        if (missing.fetch_add(1) == 0) {
          std::lock_guard<std::mutex> lock(mu);
          first_missing = keys[i] + ": " + (got.ok() ? "wrong value" : got.status().ToString());
        }
      }
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(missing.load(), 0) << "acknowledged writes not read back, first " << first_missing;
}

std::optional<NodeInfo> NodeRecord(AdminClient& admin, uint64_t id) {
  auto nodes = admin.ListNodes();
  if (!nodes.ok()) return std::nullopt;
  for (const auto& n : *nodes) {
    if (n.id == id) return n;
  }
  return std::nullopt;
}

TEST(Lifecycle, ADeadNodesReplicasAreRecreatedElsewhereAndItIsRefilledWhenBack) {
  LocalCluster cluster("dead", 4, {"--dead-node-timeout=3"});
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(CreateHashKeyspace(*admin, "lasting", 4));
  ClientOptions o = KeyspaceClientOptions(cluster, "lasting");
  Writer writer(o, 20000);
  ASSERT_TRUE(cluster.WaitUntil([&] { return writer.acked() >= 200; }, absl::Seconds(30)));
  const uint64_t victim = 4;
  ASSERT_GT(ReplicaCounts(*admin, "lasting")[victim], 0);
  absl::Time killed = absl::Now();
  cluster.node(victim).Kill9();
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto n = NodeRecord(*admin, victim);
        return n && n->down;
      },
      absl::Seconds(30)))
      << "node " << victim << " was not marked down";
  std::printf("node %llu marked down %.1f s after kill -9\n",
              static_cast<unsigned long long>(victim), absl::ToDoubleSeconds(absl::Now() - killed));
  bool recreated = cluster.WaitUntil(
      [&] {
        auto ks = admin->DescribeKeyspace("lasting");
        if (!ks.ok()) return false;
        for (const auto& s : ks->shards) {
          if (s.replicas.size() != 3) return false;
          for (uint64_t r : s.replicas) {
            if (r == victim) return false;
          }
        }
        return true;
      },
      absl::Seconds(90));
  EXPECT_TRUE(recreated) << Show(ReplicaCounts(*admin, "lasting"));
  std::printf("replicas re-created on the other nodes %.1f s after kill -9\n",
              absl::ToDoubleSeconds(absl::Now() - killed));
  ASSERT_TRUE(cluster.WaitUntil([&] { return writer.acked() >= 400; }, absl::Seconds(30)));

  // Back: marked up again, and the rebalancer gives it its share again.
  ASSERT_TRUE(cluster.node(victim).Start());
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto n = NodeRecord(*admin, victim);
        return n && !n->down;
      },
      absl::Seconds(30)));
  bool refilled = cluster.WaitUntil(
      [&] { return Spread(ReplicaCounts(*admin, "lasting"), 1, 4) <= 1; }, absl::Seconds(90));
  EXPECT_TRUE(refilled) << Show(ReplicaCounts(*admin, "lasting"));
  writer.Stop();
  std::printf("%zu writes acknowledged, %d failed (kill -9 of a leader)\n", writer.acked(),
              writer.failed());
  ExpectAllReadBack(o, writer.acked_keys());
}

TEST(Lifecycle, AShardWithNowhereToGoStaysUnderReplicatedAndSaysSo) {
  LocalCluster cluster("stuck", 3, {"--dead-node-timeout=2"});
  cluster.EnableSidecar();
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(CreateHashKeyspace(*admin, "stuck", 2));
  cluster.node(3).Kill9();
  auto health = [&] {
    return kv::testing::RunProgram({kv::testing::KvctlBinary(),
                                    "--control-endpoints=" + cluster.control_endpoint(1),
                                    "health"});
  };
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto r = health();
        return r.out.find("WARNING: node 3 is down") != std::string::npos &&
               r.out.find("under-replicated") != std::string::npos;
      },
      absl::Seconds(30)))
      << health().out;
  std::string metrics = cluster.metrics_endpoint(1);
  int port = std::stoi(metrics.substr(metrics.rfind(':') + 1));
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        std::string body = kv::testing::HttpGet(port, "/metrics");
        return body.find("kv_placement{kind=\"unplaceable_shards\"} 2") != std::string::npos &&
               body.find("kv_placement{kind=\"nodes_down\"} 1") != std::string::npos;
      },
      absl::Seconds(10)));
  // The replicas stay where they are: both shards keep node 3 among their three.
  auto counts = ReplicaCounts(*admin, "stuck");
  EXPECT_EQ(counts[3], 2) << Show(counts);
  ClientOptions o =
      cluster.ClientOptionsFor({cluster.node(1).endpoint(), cluster.node(2).endpoint()});
  o.keyspace = "stuck";
  auto client = *Client::Connect(o);
  EXPECT_TRUE(client->Put("still", "writable").ok()) << "two of three replicas are a quorum";
}

TEST(Lifecycle, LeadersSpreadAndADegradedNodeLeadsNoShard) {
  // Node 1 believes its disk is nearly full: a gray failure that lasts.
  LocalCluster cluster("leaders", 3);
  cluster.EnableSidecar();
  cluster.node(1).AddFlag("--degraded-disk-free-bytes=1000000000000000");
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(CreateHashKeyspace(*admin, "led", 8));
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto n = NodeRecord(*admin, 1);
        return n && n->degraded;
      },
      absl::Seconds(20)));
  bool spread = cluster.WaitUntil(
      [&] {
        auto c = LeaderCounts(cluster);
        return c[1] == 0 && c[2] + c[3] == 8 && Spread(c, 2, 3) <= 1;
      },
      absl::Seconds(60));
  EXPECT_TRUE(spread) << Show(LeaderCounts(cluster));
  auto listed = kv::testing::RunProgram(
      {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(2).endpoint(), "node", "list"});
  EXPECT_NE(listed.out.find("degraded"), std::string::npos) << listed.out;
}

TEST(Lifecycle, TwoNodesAddedToALoaded32ShardClusterReceiveAnEvenShare) {
  LocalCluster cluster("grow", 3);
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(CreateHashKeyspace(*admin, "grown", 32));
  ClientOptions o = KeyspaceClientOptions(cluster, "grown");
  Writer writer(o, 200000);
  // Before: a baseline of write latencies on three nodes.
  ASSERT_TRUE(cluster.WaitUntil([&] { return writer.acked() >= 300; }, absl::Seconds(30)));
  size_t before_from = writer.acked();
  absl::SleepFor(absl::Seconds(5));
  size_t during_from = writer.acked();
  std::vector<double> before = writer.LatenciesSince(before_from);
  before.resize(during_from - before_from);

  absl::Time began = absl::Now();
  for (uint64_t id : {4, 5}) {
    auto& node = cluster.AddJoiningNode(id);
    ASSERT_TRUE(node.Start());
    ASSERT_TRUE(admin->AddLearner(id, node.peer_endpoint()).ok());
    ASSERT_TRUE(cluster.WaitUntil([&] { return admin->Promote(id).ok(); }, absl::Seconds(30)));
  }
  auto even = [&] {
    // 96 replicas over 5 nodes: 19 or 20 each; 32 leaderships: 6 or 7 each.
    auto replicas = ReplicaCounts(*admin, "grown");
    auto leaders = LeaderCounts(cluster);
    return Spread(replicas, 1, 5) <= 1 && Spread(leaders, 1, 5) <= 1;
  };
  bool evened = cluster.WaitUntil(even, absl::Seconds(240));
  double took = absl::ToDoubleSeconds(absl::Now() - began);
  EXPECT_TRUE(evened) << "replicas " << Show(ReplicaCounts(*admin, "grown")) << ", leaders "
                      << Show(LeaderCounts(cluster));
  std::vector<double> during = writer.LatenciesSince(during_from);
  writer.Stop();
  std::printf(
      "rebalance after adding 2 nodes to 3 (32 shards x 3): %.1f s; replicas %s; leaders %s\n"
      "put latency before: p50 %.1f ms p99 %.1f ms (%zu puts); during: p50 %.1f ms p99 %.1f ms "
      "(%zu puts); %d failed\n",
      took, Show(ReplicaCounts(*admin, "grown")).c_str(), Show(LeaderCounts(cluster)).c_str(),
      Percentile(before, 0.5), Percentile(before, 0.99), before.size(), Percentile(during, 0.5),
      Percentile(during, 0.99), during.size(), writer.failed());
  ExpectAllReadBack(o, writer.acked_keys());
}

// The shard of a geo keyspace that holds `region`'s keys.
std::optional<ShardInfo> RegionShard(AdminClient& admin, const std::string& keyspace,
                                     const std::string& region) {
  auto ks = admin.DescribeKeyspace(keyspace);
  if (!ks.ok()) return std::nullopt;
  for (const auto& s : ks->shards) {
    if (s.region == region) return s;
  }
  return std::nullopt;
}

bool Holds(const std::vector<uint64_t>& replicas, uint64_t node) {
  return std::find(replicas.begin(), replicas.end(), node) != replicas.end();
}

// Issue 12's geo proof: a 3-region geo keyspace beside a hash keyspace whose replicas go
// anywhere, through a node added to a region, a drain, and a kill -9 that leaves a region's
// shard nowhere to go. Every geo replica stays in its region, checked at the end on each
// node's RocksDB; every acknowledged write is read back.
TEST(Lifecycle, AGeoKeyspaceKeepsEveryReplicaInItsRegionThroughAddDrainAndKill) {
  const std::map<uint64_t, std::string> region = {{1, "eu"}, {2, "eu"}, {3, "us"}, {4, "us"},
                                                  {5, "ap"}, {6, "ap"}, {7, "eu"}};
  LocalCluster cluster("geo3", 6, {"--dead-node-timeout=3"});
  for (uint64_t id = 1; id <= 6; ++id) cluster.node(id).AddFlag("--region=" + region.at(id));
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  KeyspaceSpec geo;
  geo.name = "people";
  geo.strategy = "geo";
  geo.regions = {"eu", "us", "ap"};
  geo.replicas = 2;
  auto created = admin->CreateKeyspace(geo);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE(CreateHashKeyspace(*admin, "anywhere", 6));
  ClientOptions o = KeyspaceClientOptions(cluster, "people");
  std::map<std::string, std::unique_ptr<Writer>> writers;
  for (const char* r : {"eu", "us", "ap"}) {
    writers[r] = std::make_unique<Writer>(o, 100000, absl::StrCat(r, "/w-"));
  }
  ClientOptions anywhere = KeyspaceClientOptions(cluster, "anywhere");
  Writer hash_writer(anywhere, 100000);
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        for (auto& [r, w] : writers) {
          if (w->acked() < 50) return false;
        }
        return true;
      },
      absl::Seconds(30)));

  // Added: node 7 in eu. The rebalancer gives it replicas of the hash keyspace; of the geo
  // keyspace only eu's shard may ever go there.
  auto& added = cluster.AddJoiningNode(7);
  added.AddFlag("--region=eu");
  ASSERT_TRUE(added.Start());
  ASSERT_TRUE(admin->AddLearner(7, added.peer_endpoint()).ok());
  ASSERT_TRUE(cluster.WaitUntil([&] { return admin->Promote(7).ok(); }, absl::Seconds(30)));
  EXPECT_TRUE(cluster.WaitUntil([&] { return ReplicaCounts(*admin, "anywhere")[7] >= 2; },
                                absl::Seconds(90)))
      << Show(ReplicaCounts(*admin, "anywhere"));

  // Drained: node 1. Its eu replica has one place to go, node 7.
  absl::Time drain_began = absl::Now();
  ASSERT_TRUE(admin->DrainNode(1).ok());
  bool drained = cluster.WaitUntil(
      [&] {
        auto d = admin->DrainNode(1);
        return d.ok() && d->replicas_left == 0 && d->leaders_left == 0;
      },
      absl::Seconds(120));
  EXPECT_TRUE(drained) << "anywhere " << Show(ReplicaCounts(*admin, "anywhere")) << ", people "
                       << Show(ReplicaCounts(*admin, "people"));
  std::printf("drain of node 1 (eu): %.1f s\n", absl::ToDoubleSeconds(absl::Now() - drain_began));
  auto eu = RegionShard(*admin, "people", "eu");
  ASSERT_TRUE(eu.has_value());
  EXPECT_EQ(eu->replicas.size(), 2u);
  EXPECT_TRUE(Holds(eu->replicas, 2) && Holds(eu->replicas, 7)) << "eu's shard left eu";

  // Killed: node 5 in ap, for good. The hash keyspace's replicas there are re-created
  // elsewhere; ap's shard has no other ap node to go to, so it stays, under-replicated, and
  // the rebalancer says so. (With two replicas, ap also lost its quorum: its writer stops.)
  auto ap_before = RegionShard(*admin, "people", "ap");
  ASSERT_TRUE(ap_before.has_value());
  ASSERT_TRUE(Holds(ap_before->replicas, 5));
  writers["ap"]->Stop();
  // Node 6 has applied every ap write before node 5 dies (checked on its disk at the end).
  auto applied_on = [&](uint64_t node) -> uint64_t {
    auto groups = cluster.NewAdminFor(node)->ListGroups();
    if (!groups.ok()) return 0;
    for (const auto& g : *groups) {
      if (g.id == ap_before->shard_id && g.hosted_here) return g.applied_index;
    }
    return 0;
  };
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        uint64_t on6 = applied_on(6);
        return on6 > 0 && on6 >= applied_on(5);
      },
      absl::Seconds(10)));
  cluster.node(5).Kill9();
  bool recreated = cluster.WaitUntil(
      [&] {
        auto ks = admin->DescribeKeyspace("anywhere");
        if (!ks.ok()) return false;
        for (const auto& s : ks->shards) {
          if (s.replicas.size() != 3 || Holds(s.replicas, 5) || Holds(s.replicas, 1)) {
            return false;
          }
        }
        return true;
      },
      absl::Seconds(90));
  EXPECT_TRUE(recreated) << Show(ReplicaCounts(*admin, "anywhere"));
  auto ap_shard = ap_before->shard_id;
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto status = admin->Rebalance(AdminClient::RebalanceAction::kStatus);
        if (!status.ok()) return false;
        for (const auto& u : status->unplaceable) {
          if (u.shard_id == ap_shard && u.stuck_on == 5) return true;
        }
        return false;
      },
      absl::Seconds(30)))
      << "ap's shard is not reported unplaceable";
  auto ap_after = RegionShard(*admin, "people", "ap");
  ASSERT_TRUE(ap_after.has_value());
  EXPECT_EQ(ap_after->replicas, ap_before->replicas) << "ap's shard stays where it was";
  // eu and us kept writing through all of it.
  size_t eu_acked = writers["eu"]->acked(), us_acked = writers["us"]->acked();
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        return writers["eu"]->acked() > eu_acked + 20 && writers["us"]->acked() > us_acked + 20;
      },
      absl::Seconds(30)));

  std::vector<std::string> acked;
  for (auto& [r, w] : writers) {
    w->Stop();
    std::printf("%s: %zu writes acknowledged, %d failed\n", r.c_str(), w->acked(), w->failed());
    for (auto& k : w->acked_keys()) acked.push_back(k);
  }
  hash_writer.Stop();
  // ap's keys were all acknowledged before the kill; its one live replica cannot serve them
  // without a quorum, so they are checked on disk below instead.
  std::vector<std::string> readable;
  for (auto& k : acked) {
    if (!k.starts_with("ap/")) readable.push_back(k);
  }
  ExpectAllReadBack(o, readable);
  ExpectAllReadBack(anywhere, hash_writer.acked_keys());

  // On disk, not by the map: no node's RocksDB holds another region's geo key, and the node
  // the drain emptied holds none at all.
  std::string prefix = sharding::KeyspacePrefix(created->id);
  std::map<uint64_t, int> on_disk;
  for (uint64_t id = 1; id <= 7; ++id) {
    if (cluster.node(id).running()) {
      ASSERT_EQ(cluster.node(id).Stop(), 0) << id;
    }
    auto engine = storage::Engine::Open(storage::EngineOptions{cluster.node(id).data_dir()});
    ASSERT_TRUE(engine.ok()) << id << ": " << engine.status();
    for (auto it = (*engine)->NewIterator(storage::Column::kData, prefix,
                                          sharding::KeyspaceEnd(created->id));
         it->Valid(); it->Next()) {
      std::string_view user = it->key().substr(prefix.size());
      EXPECT_TRUE(user.starts_with(region.at(id) + "/"))
          << "node " << id << " (" << region.at(id) << ") holds " << user;
      ++on_disk[id];
    }
  }
  std::printf("geo keys on disk per node: %s\n", Show(on_disk).c_str());
  EXPECT_EQ(on_disk[1], 0) << "the drained node kept geo data";
  for (uint64_t id : {2, 3, 4, 5, 6, 7}) EXPECT_GT(on_disk[id], 0) << id;
  size_t ap_acked = writers["ap"]->acked();
  EXPECT_GE(on_disk[6], static_cast<int>(ap_acked)) << "ap's live replica holds every ap write";
}

}  // namespace
}  // namespace kv
