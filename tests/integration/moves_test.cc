// Replica moves on a real 4-node cluster: `kvctl shard move` under a write load, once from a
// follower and once from the shard's leader (which hands leadership away first). Every
// acknowledged write is read back, the new replica holds the data in its own RocksDB, and the
// node that gave its replica up has destroyed it. Every wait is bounded.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "sharding/key_codec.h"
#include "storage/engine.h"
#include "tests/support/local_cluster.h"
#include "tests/support/shard_counts.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;
using kv::testing::ReplicaCounts;

// A range keyspace of one shard with 3 replicas.
absl::StatusOr<KeyspaceInfo> CreateRangeKeyspace(AdminClient& admin, const std::string& name) {
  KeyspaceSpec spec;
  spec.name = name;
  spec.replicas = 3;
  return admin.CreateKeyspace(spec);
}

// The leader of the first shard of a keyspace, waiting up to 10 s for it to be known (0: none).
uint64_t FirstShardLeader(AdminClient& admin, const std::string& keyspace) {
  for (int i = 0; i < 100; ++i) {
    auto ks = admin.DescribeKeyspace(keyspace);
    if (ks.ok() && ks->shards[0].leader_id != 0) return ks->shards[0].leader_id;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return 0;
}

TEST(Moves, ShardMoveUnderLoadKeepsEveryWriteAndLeavesNoReplicaBehind) {
  LocalCluster cluster("moves", 4);
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  auto created = CreateRangeKeyspace(*admin, "moving");
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ(created->shards.size(), 1u);
  const uint64_t shard = created->shards[0].shard_id;
  std::set<uint64_t> replicas(created->shards[0].replicas.begin(),
                              created->shards[0].replicas.end());
  ASSERT_EQ(replicas.size(), 3u);

  ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
  o.keyspace = "moving";
  o.timeout = absl::Seconds(10);
  auto client = *Client::Connect(o);
  std::map<std::string, std::string> acked;
  std::mutex mu;
  for (int i = 0; i < 200; ++i) {
    std::string k = absl::StrCat("pre-", i);
    ASSERT_TRUE(client->Put(k, "v").ok());
    acked[k] = "v";
  }
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::string first_errors;
  std::thread writer([&] {
    auto c = *Client::Connect(o);
    for (int i = 0; i < 5000 && !stop.load(); ++i) {
      std::string k = absl::StrCat("during-", i);
      auto put = c->Put(k, "w");
      std::lock_guard<std::mutex> lock(mu);
      if (put.ok()) {
        acked[k] = "w";
      } else if (failed.fetch_add(1) < 3) {
        first_errors += put.status().ToString() + "\n";
      }
    }
  });
  auto kvctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(1).endpoint(),
                 "--admin-token-file=" + cluster.admin_token_file(), "-o", "json"});
    return kv::testing::RunProgram(args, "", 120000);
  };
  auto move = [&](uint64_t from, uint64_t to) {
    absl::Time began = absl::Now();
    auto r = kvctl({"shard", "move", std::to_string(shard), "--from", std::to_string(from), "--to",
                    std::to_string(to)});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    std::printf("move of shard %llu from node %llu to node %llu: %.0f ms\n",
                static_cast<unsigned long long>(shard), static_cast<unsigned long long>(from),
                static_cast<unsigned long long>(to),
                absl::ToDoubleMilliseconds(absl::Now() - began));
    std::set<uint64_t> voters;
    if (r.exit_code == 0) {
      auto parsed = nlohmann::json::parse(r.out);  // kept: a range-for over a temporary dangles
      for (uint64_t v : parsed["voters"]) voters.insert(v);
    }
    return voters;
  };
  uint64_t outside = 0;
  for (uint64_t n = 1; n <= 4; ++n) {
    if (!replicas.contains(n)) outside = n;
  }
  // First from a follower, then from whichever node leads the shard.
  uint64_t leader = FirstShardLeader(*admin, "moving");
  ASSERT_NE(leader, 0u);
  uint64_t follower = 0;
  for (uint64_t r : replicas) {
    if (r != leader) follower = r;
  }
  std::set<uint64_t> after_first = move(follower, outside);
  std::set<uint64_t> want_first = replicas;
  want_first.erase(follower);
  want_first.insert(outside);
  EXPECT_EQ(after_first, want_first);
  std::set<uint64_t> after_second = move(leader, follower);
  std::set<uint64_t> want_second = want_first;
  want_second.erase(leader);
  want_second.insert(follower);
  EXPECT_EQ(after_second, want_second) << "the leader's replica moved after it handed over";
  absl::SleepFor(absl::Milliseconds(300));
  stop.store(true);
  writer.join();
  EXPECT_EQ(failed.load(), 0) << "writes failed during the moves:\n" << first_errors;
  std::printf("%zu writes acknowledged, %d failed\n", acked.size(), failed.load());

  for (const auto& [k, v] : acked) {
    auto got = client->Get(k);
    ASSERT_TRUE(got.ok()) << k << ": " << got.status();
    EXPECT_EQ(got->value, v) << k;
  }
  // The node that gave up its replica last destroys it once the leader publishes the change.
  auto on_leader = cluster.NewAdminFor(leader);
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto groups = on_leader->ListGroups();
        if (!groups.ok()) return false;
        for (const auto& g : *groups) {
          if (g.id == shard && g.hosted_here) return false;
        }
        return true;
      },
      absl::Seconds(20)))
      << "node " << leader << " still hosts shard " << shard;
  // On disk: the last new replica holds every acknowledged key, the node that left holds none.
  uint64_t keyspace_id = created->id;
  auto keys_on = [&](uint64_t node) {
    EXPECT_EQ(cluster.node(node).Stop(), 0);
    auto engine = storage::Engine::Open(storage::EngineOptions{cluster.node(node).data_dir()});
    EXPECT_TRUE(engine.ok()) << engine.status();
    size_t n = 0;
    if (!engine.ok()) return n;
    for (auto it =
             (*engine)->NewIterator(storage::Column::kData, sharding::KeyspacePrefix(keyspace_id),
                                    sharding::KeyspaceEnd(keyspace_id));
         it->Valid(); it->Next()) {
      ++n;
    }
    return n;
  };
  EXPECT_EQ(keys_on(follower), acked.size());
  EXPECT_EQ(keys_on(leader), 0u);
}

TEST(Moves, DrainEmptiesANodeThenTheRebalancerEvensTheSpreadWhenResumed) {
  LocalCluster cluster("drain", 4);
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(kv::testing::CreateHashKeyspace(*admin, "drained", 8));
  ClientOptions o = kv::testing::KeyspaceClientOptions(cluster, "drained");
  std::map<std::string, std::string> acked;
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::thread writer([&] {
    auto c = *Client::Connect(o);
    for (int i = 0; i < 20000 && !stop.load(); ++i) {
      std::string k = absl::StrCat("k-", i);
      auto put = c->Put(k, "v");
      std::lock_guard<std::mutex> lock(mu);
      if (put.ok()) {
        acked[k] = "v";
      } else {
        failed.fetch_add(1);
      }
    }
  });
  auto kvctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(2).endpoint(),
                 "--admin-token-file=" + cluster.admin_token_file(), "-o", "json"});
    auto r = kv::testing::RunProgram(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
  };
  absl::Time began = absl::Now();
  auto drain = kvctl({"node", "drain", "1"});
  EXPECT_EQ(drain["state"], "draining");
  bool empty = cluster.WaitUntil(
      [&] {
        auto d = kvctl({"node", "drain", "1"});
        return d.value("safe_to_remove", false) && ReplicaCounts(*admin, "drained")[1] == 0;
      },
      absl::Seconds(90));
  EXPECT_TRUE(empty) << "node 1 still holds " << ReplicaCounts(*admin, "drained")[1] << " replicas";
  std::printf("drain of node 1: %.1f s\n", absl::ToDoubleSeconds(absl::Now() - began));
  auto counts = ReplicaCounts(*admin, "drained");
  for (uint64_t n = 2; n <= 4; ++n) EXPECT_EQ(counts[n], 8) << "node " << n;

  // Paused, the undrained node stays empty; resumed, it fills until every node is within one.
  auto paused = kvctl({"rebalance", "pause"});
  EXPECT_EQ(paused["paused"], true);
  kvctl({"node", "drain", "1", "--undo"});
  auto status = kvctl({"rebalance", "status"});
  EXPECT_FALSE(status["pending"].empty()) << "placement wants replicas back on node 1";
  absl::SleepFor(absl::Seconds(3));
  EXPECT_EQ(ReplicaCounts(*admin, "drained")[1], 0) << "a move started while paused";
  began = absl::Now();
  kvctl({"rebalance", "resume"});
  bool even = cluster.WaitUntil(
      [&] { return kv::testing::Spread(ReplicaCounts(*admin, "drained"), 1, 4) <= 1; },
      absl::Seconds(90));
  EXPECT_TRUE(even);
  std::printf("rebalance onto node 1: %.1f s\n", absl::ToDoubleSeconds(absl::Now() - began));
  stop.store(true);
  writer.join();
  EXPECT_EQ(failed.load(), 0) << "writes failed during the drain and the rebalance";
  auto client = *Client::Connect(o);
  for (const auto& [k, v] : acked) {
    auto got = client->Get(k);
    ASSERT_TRUE(got.ok()) << k << ": " << got.status();
  }
  std::printf("%zu writes acknowledged and read back\n", acked.size());
}

// A shard holding about 10 MiB moves, timed (MiB/s) with a writer's latencies before and during
// the move (the stall a move causes); then another move whose source is killed -9 a moment after
// it starts: the move completes without it (the old majority is the other two replicas) and
// every acknowledged write is read back.
TEST(Moves, ALoadedShardMovesAndAMoveSurvivesItsSourceKilled) {
  LocalCluster cluster("bulk", 4);
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  auto created = CreateRangeKeyspace(*admin, "bulk");
  ASSERT_TRUE(created.ok()) << created.status();
  const uint64_t shard = created->shards[0].shard_id;
  std::vector<uint64_t> replicas = created->shards[0].replicas;
  ClientOptions o = kv::testing::KeyspaceClientOptions(cluster, "bulk");
  const std::string value(256, 'b');
  constexpr int kLoaders = 8, kPerLoader = 5000;
  std::vector<std::thread> loaders;
  std::atomic<int> load_failed{0};
  for (int t = 0; t < kLoaders; ++t) {
    loaders.emplace_back([&, t] {
      auto c = *Client::Connect(o);
      for (int i = 0; i < kPerLoader; ++i) {
        if (!c->Put(absl::StrCat("bulk-", t, "-", i), value).ok()) load_failed.fetch_add(1);
      }
    });
  }
  for (auto& t : loaders) t.join();
  ASSERT_EQ(load_failed.load(), 0);

  std::mutex mu;
  std::vector<std::pair<absl::Time, double>> latencies;  // (when, ms)
  std::map<std::string, bool> acked;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    auto c = *Client::Connect(o);
    for (int i = 0; i < 100000 && !stop.load(); ++i) {
      std::string k = absl::StrCat("live-", i);
      absl::Time began = absl::Now();
      bool ok = c->Put(k, value).ok();
      std::lock_guard<std::mutex> lock(mu);
      if (ok) {
        acked[k] = true;
        latencies.push_back({began, absl::ToDoubleMilliseconds(absl::Now() - began)});
      }
    }
  });
  auto kvctl_move = [&](uint64_t from, uint64_t to) {
    return kv::testing::RunProgram(
        {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(to).endpoint(),
         "--admin-token-file=" + cluster.admin_token_file(), "shard", "move", std::to_string(shard),
         "--from", std::to_string(from), "--to", std::to_string(to)},
        "", 120000);
  };
  uint64_t leader = 0;
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto ks = admin->DescribeKeyspace("bulk");
        leader = ks.ok() ? ks->shards[0].leader_id : 0;
        return leader != 0;
      },
      absl::Seconds(10)));
  std::vector<uint64_t> followers;
  for (uint64_t r : replicas) {
    if (r != leader) followers.push_back(r);
  }
  ASSERT_EQ(followers.size(), 2u);
  uint64_t outside = 10 - replicas[0] - replicas[1] - replicas[2];  // ids 1..4 sum to 10
  absl::SleepFor(absl::Seconds(2));                                 // latencies before the move
  auto ks = admin->DescribeKeyspace("bulk");
  double mib = ks.ok() ? static_cast<double>(ks->shards[0].approximate_bytes) / (1 << 20) : 0;
  absl::Time move_began = absl::Now();
  auto first = kvctl_move(followers[0], outside);
  absl::Time move_ended = absl::Now();
  EXPECT_EQ(first.exit_code, 0) << first.out << first.err;
  absl::SleepFor(absl::Seconds(1));
  {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<double> before, during;
    for (const auto& [when, ms] : latencies) {
      if (when < move_began) before.push_back(ms);
      if (when >= move_began && when < move_ended) during.push_back(ms);
    }
    std::sort(before.begin(), before.end());
    std::sort(during.begin(), during.end());
    auto p99 = [](const std::vector<double>& v) { return v.empty() ? 0 : v[v.size() * 99 / 100]; };
    double secs = absl::ToDoubleSeconds(move_ended - move_began);
    std::printf(
        "move of a %.1f MiB shard: %.2f s (%.1f MiB/s); puts before p99 %.1f ms max %.1f ms "
        "(%zu), during p99 %.1f ms max %.1f ms (%zu)\n",
        mib, secs, mib / secs, p99(before), before.empty() ? 0 : before.back(), before.size(),
        p99(during), during.empty() ? 0 : during.back(), during.size());
  }

  // The next move's source dies while the move runs.
  uint64_t source = followers[1], target = followers[0];
  std::thread mover([&] {
    auto r = kvctl_move(source, target);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  });
  absl::SleepFor(absl::Milliseconds(300));
  cluster.node(source).Kill9();
  mover.join();
  // The metadata publishes the new replicas shortly after the move answers.
  std::set<uint64_t> want{leader, outside, target}, voters;
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto after = admin->DescribeKeyspace("bulk");
        if (after.ok())
          voters = {after->shards[0].replicas.begin(), after->shards[0].replicas.end()};
        return voters == want;
      },
      absl::Seconds(10)))
      << "replicas " << absl::StrJoin(voters, ",");
  absl::SleepFor(absl::Milliseconds(500));
  stop.store(true);
  writer.join();
  auto c = *Client::Connect(o);
  size_t checked = 0;
  for (int t = 0; t < kLoaders; ++t) {
    for (int i = 0; i < kPerLoader; i += 50, ++checked) {
      auto got = c->Get(absl::StrCat("bulk-", t, "-", i));
      ASSERT_TRUE(got.ok()) << got.status();
    }
  }
  for (const auto& [k, ok] : acked) {
    auto got = c->Get(k);
    ASSERT_TRUE(got.ok()) << k << ": " << got.status();
    ++checked;
  }
  std::printf("%zu keys read back after the source was killed mid-move\n", checked);
}

}  // namespace
}  // namespace kv

namespace kv {
namespace {

// A move whose new replica is in another zone than the shard's leader: the learner's snapshot
// is streamed by the replica in its own zone, in the leader's name (delegated snapshots).
TEST(Moves, ALearnerIsCaughtUpByTheReplicaInItsZoneNotByTheLeader) {
  // A short log, so that the learner needs a snapshot rather than the entries.
  LocalCluster cluster("delegated", 4, {"--log-compact-threshold=50", "--log-retain=10"});
  auto admin = cluster.StartRegistered();
  ASSERT_NE(admin, nullptr);
  auto kvctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(1).endpoint(),
                 "--admin-token-file=" + cluster.admin_token_file(), "-o", "json"});
    return kv::testing::RunProgram(args, "", 120000);
  };
  ASSERT_EQ(kvctl({"rebalance", "pause"}).exit_code, 0);  // only the move below changes replicas
  auto created = CreateRangeKeyspace(*admin, "zoned");
  ASSERT_TRUE(created.ok()) << created.status();
  const uint64_t shard = created->shards[0].shard_id;
  std::set<uint64_t> replicas(created->shards[0].replicas.begin(),
                              created->shards[0].replicas.end());
  ASSERT_EQ(replicas.size(), 3u);
  uint64_t leader = FirstShardLeader(*admin, "zoned");
  ASSERT_NE(leader, 0u);
  uint64_t target = 0, delegate = 0, source = 0;
  for (uint64_t n = 1; n <= 4; ++n) {
    if (!replicas.contains(n)) {
      target = n;
    } else if (n != leader) {
      (delegate == 0 ? delegate : source) = n;
    }
  }
  // The delegate and the target move to zone b; the leader and the source stay unlabelled.
  for (uint64_t n : {delegate, target}) {
    ASSERT_EQ(cluster.node(n).Stop(), 0);
    cluster.node(n).AddFlag("--zone=b");
    ASSERT_TRUE(cluster.node(n).Start());
  }
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto nodes = admin->ListNodes();
        if (!nodes.ok()) return false;
        int in_b = 0;
        for (const auto& n : *nodes) in_b += n.zone == "b";
        return in_b == 2;
      },
      absl::Seconds(20)))
      << "the restarted nodes did not register their zone";

  ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
  o.keyspace = "zoned";
  o.timeout = absl::Seconds(10);
  auto client = *Client::Connect(o);
  std::map<std::string, std::string> acked;
  for (int i = 0; i < 300; ++i) {  // well past the compaction threshold
    std::string k = absl::StrCat("k-", i);
    ASSERT_TRUE(client->Put(k, std::string(200, 'v')).ok());
    acked[k] = std::string(200, 'v');
  }
  // Leadership may have moved while the followers restarted; it must not be in zone b.
  uint64_t now_leader = FirstShardLeader(*admin, "zoned");
  ASSERT_TRUE(now_leader == leader || now_leader == source) << "leader " << now_leader;
  if (now_leader == source) source = leader;  // move the unlabelled follower's replica

  auto r = kvctl({"shard", "move", std::to_string(shard), "--from", std::to_string(source), "--to",
                  std::to_string(target)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(
      cluster.node(now_leader)
          .ReadLog()
          .find(absl::StrCat("node ", delegate, " streams the snapshot node ", target, " needs")),
      std::string::npos)
      << "the leader asked the replica in the target's zone to stream the snapshot";
  for (const auto& [k, v] : acked) {
    auto got = client->Get(k);
    ASSERT_TRUE(got.ok()) << k << ": " << got.status();
    EXPECT_EQ(got->value, v) << k;
  }
}

}  // namespace
}  // namespace kv
