// Real clusters of kvd processes on loopback under failures: kill -9, SIGSTOP, data loss,
// membership changes, lagging followers. Every loop is bounded in count and time.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;

// Writers putting unique keys until stopped; remembers every acknowledged write.
class WriteLoad {
 public:
  WriteLoad(const LocalCluster& cluster, int threads, const std::string& prefix) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, &cluster, t, prefix] {
        auto client = cluster.NewClient(absl::Seconds(5));
        for (int i = 0; i < 200000 && !stop_; ++i) {
          std::string key = absl::StrCat(prefix, t, "-", i);
          auto r = client->Put(key, key);
          std::lock_guard<std::mutex> lock(mu_);
          if (r.ok()) acked_[key] = r->version;
        }
      });
    }
  }
  ~WriteLoad() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  size_t acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_.size();
  }
  std::map<std::string, uint64_t> acked_writes() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  bool WaitForAcks(size_t n, absl::Duration wait) {
    absl::Time deadline = absl::Now() + wait;
    while (absl::Now() < deadline) {
      if (acked() >= n) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, uint64_t> acked_;
  std::vector<std::thread> threads_;
};

// Every acknowledged write is readable (linearizably) with its version, and no two
// acknowledged writes share a version: a version is a log index, so two leaders accepting
// writes at the same index would show up here.
void ExpectAllAcknowledgedWritesPresent(const LocalCluster& cluster,
                                        const std::map<std::string, uint64_t>& acked) {
  auto client = cluster.NewClient(absl::Seconds(10));
  std::set<uint64_t> versions;
  for (const auto& [key, version] : acked) {
    EXPECT_TRUE(versions.insert(version).second) << "two acknowledged writes at index " << version;
    auto r = client->Get(key);
    ASSERT_TRUE(r.ok()) << "acknowledged write " << key << " lost: " << r.status();
    EXPECT_EQ(r->value, key);
    EXPECT_EQ(r->version, version);
  }
}

TEST(ClusterTest, KillLeaderUnderWriteLoad) {
  LocalCluster cluster("kill-leader", 3);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  ASSERT_NE(leader, 0u);
  WriteLoad load(cluster, 4, "k");
  ASSERT_TRUE(load.WaitForAcks(200, absl::Seconds(20)));
  auto killed_at = absl::Now();
  cluster.node(leader).Kill9();
  size_t before = load.acked();
  // Writes resume once a new leader is elected.
  ASSERT_TRUE(load.WaitForAcks(before + 50, absl::Seconds(20)));
  double failover_s = absl::ToDoubleSeconds(absl::Now() - killed_at);
  uint64_t new_leader = cluster.WaitForLeader(absl::Seconds(10), leader);
  EXPECT_NE(new_leader, 0u);
  EXPECT_NE(new_leader, leader);
  std::printf("writes resumed %.2f s after kill -9 of leader %lu (new leader %lu)\n", failover_s,
              static_cast<unsigned long>(leader), static_cast<unsigned long>(new_leader));
  load.Stop();
  ASSERT_TRUE(cluster.node(leader).Start());  // the old leader rejoins as a follower
  ExpectAllAcknowledgedWritesPresent(cluster, load.acked_writes());
}

// What a crash in the middle of a write leaves at the end of a node's newest Raft log segment:
// half a record (a real header and part of its payload), then garbage.
void TearNewestRaftLogSegment(const std::string& data_dir) {
  std::filesystem::path newest;
  for (const auto& f : std::filesystem::directory_iterator(data_dir + "/raft-log")) {
    if (f.path().extension() == ".seg" && f.path() > newest) newest = f.path();
  }
  ASSERT_FALSE(newest.empty()) << "no raft log segment in " << data_dir;
  std::string bytes;
  {
    std::ifstream in(newest, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(bytes.size(), 28u);
  std::ofstream out(newest, std::ios::binary | std::ios::app);
  out << bytes.substr(8, 20) << "\x7f\x01torn";
}

TEST(ClusterTest, TornRaftLogTailsAfterKill9AreDroppedAndNothingAcknowledgedIsLost) {
  LocalCluster cluster("torn-log", 3);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  ASSERT_NE(leader, 0u);
  WriteLoad load(cluster, 4, "t");
  ASSERT_TRUE(load.WaitForAcks(300, absl::Seconds(20)));
  uint64_t follower = leader % 3 + 1;
  for (uint64_t victim : {follower, leader}) {
    cluster.node(victim).Kill9();
    TearNewestRaftLogSegment(cluster.node(victim).data_dir());
    ASSERT_TRUE(load.WaitForAcks(load.acked() + 100, absl::Seconds(30)))
        << "the other two serve on";
    ASSERT_TRUE(cluster.node(victim).Start()) << cluster.node(victim).ReadLog();
    EXPECT_NE(cluster.node(victim).ReadLog().find("raft log: dropped"), std::string::npos)
        << "the torn tail is noticed and dropped";
    ASSERT_TRUE(load.WaitForAcks(load.acked() + 100, absl::Seconds(30)));
  }
  load.Stop();
  ExpectAllAcknowledgedWritesPresent(cluster, load.acked_writes());
}

TEST(ClusterTest, StoppedLeaderIsReplacedAndRejoinsWithoutSplitBrain) {
  LocalCluster cluster("sigstop", 3);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  WriteLoad load(cluster, 4, "s");
  ASSERT_TRUE(load.WaitForAcks(200, absl::Seconds(20)));
  cluster.node(leader).SignalStop();  // alive and listening, but not answering
  uint64_t new_leader = cluster.WaitForLeader(absl::Seconds(20), leader);
  ASSERT_NE(new_leader, 0u);
  size_t before = load.acked();
  ASSERT_TRUE(load.WaitForAcks(before + 100, absl::Seconds(20)));
  cluster.node(leader).SignalContinue();
  // The old leader learns the new term, steps down and catches up.
  auto admin = cluster.NewAdmin();
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        for (const auto& s : admin->Status()) {
          if (s.node_id == leader) return s.role == "follower" && s.leader_id == new_leader;
        }
        return false;
      },
      absl::Seconds(20)));
  ASSERT_TRUE(load.WaitForAcks(load.acked() + 50, absl::Seconds(20)));
  load.Stop();
  ExpectAllAcknowledgedWritesPresent(cluster, load.acked_writes());
}

TEST(ClusterTest, LaggingFollowerCatchesUpBySnapshot) {
  LocalCluster cluster("snapshot", 3, {"--log-compact-threshold=200", "--log-retain=20"});
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  uint64_t lagging = leader % 3 + 1;
  ASSERT_EQ(cluster.node(lagging).Stop(), 0);
  auto client = cluster.NewClient();
  for (int i = 0; i < 600; ++i) ASSERT_TRUE(client->Put(absl::StrCat("snap", i), "v").ok());
  auto admin = cluster.NewAdmin();
  uint64_t leader_first_index = 0;
  for (const auto& s : admin->Status()) {
    if (s.node_id == leader) leader_first_index = s.first_index;
  }
  ASSERT_GT(leader_first_index, 100u) << "the leader compacted its log";
  ASSERT_TRUE(cluster.node(lagging).Start());
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        uint64_t leader_applied = 0, lagging_applied = 0;
        for (const auto& s : admin->Status()) {
          if (s.node_id == leader) leader_applied = s.applied_index;
          if (s.node_id == lagging) lagging_applied = s.applied_index;
        }
        return lagging_applied > 0 && lagging_applied >= leader_applied;
      },
      absl::Seconds(30)));
  // The data arrived, not just the index: read from the caught-up follower alone.
  auto follower_client =
      *Client::Connect(cluster.ClientOptionsFor({cluster.node(lagging).endpoint()}));
  ReadOptions eventual;
  eventual.consistency = ReadConsistency::kEventual;
  auto r = follower_client->Get("snap599", eventual);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "v");
}

TEST(ClusterTest, NodeThatLostItsDataRejoinsAsANewLearner) {
  LocalCluster cluster("data-loss", 3);
  ASSERT_TRUE(cluster.StartAll());
  auto client = cluster.NewClient();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(client->Put(absl::StrCat("d", i), "v").ok());
  uint64_t leader = cluster.WaitForLeader();
  uint64_t victim = leader % 3 + 1;
  auto admin = cluster.NewAdmin();
  // The metadata records it as removed (kvctl node list), and later as up again.
  auto state_of_victim = [&] {
    auto nodes = admin->ListNodes();
    if (!nodes.ok()) return std::string("?");
    for (const auto& n : *nodes) {
      if (n.id == victim) return n.state;
    }
    return std::string("absent");
  };
  ASSERT_TRUE(cluster.WaitUntil([&] { return state_of_victim() == "up"; }, absl::Seconds(15)));
  cluster.node(victim).Kill9();
  std::filesystem::remove_all(cluster.node(victim).data_dir());
  // etcd's rule: a node that may have voted must not come back with an empty state as the same
  // member. Remove it, then add it anew as a learner, which never votes until promoted.
  ASSERT_TRUE(admin->Remove(victim).ok());
  // The metadata records it as removed (kvctl node list), and later as up again.
  EXPECT_TRUE(cluster.WaitUntil([&] { return state_of_victim() == "removed"; }, absl::Seconds(15)))
      << state_of_victim();
  kv::testing::KvdProcess rejoined(victim, cluster.node(victim).data_dir(),
                                   cluster.node(victim).port());
  rejoined.AddFlag("--join");
  rejoined.AddFlag("--peers=" + cluster.peers_flag());
  cluster.AddClusterFlags(rejoined);
  rejoined.set_wait_for_leader(false);
  ASSERT_TRUE(rejoined.Start());
  ASSERT_TRUE(admin->AddLearner(victim, rejoined.peer_endpoint()).ok());
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto p = admin->Promote(victim);
        return p.ok();
      },
      absl::Seconds(30)));
  bool voter = false;
  for (const auto& s : admin->Status()) {
    if (s.node_id != leader) continue;
    for (const auto& m : s.members) voter = voter || (m.id == victim && m.voter);
  }
  EXPECT_TRUE(voter);
  EXPECT_TRUE(cluster.WaitUntil([&] { return state_of_victim() == "up"; }, absl::Seconds(15)))
      << state_of_victim();
  auto direct = *Client::Connect(cluster.ClientOptionsFor({rejoined.endpoint()}));
  auto r = direct->Get("d49");  // linearizable read through the rejoined node
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "v");
}

TEST(ClusterTest, AddAndRemoveAFourthNodeUnderLoad) {
  LocalCluster cluster("membership", 3);
  ASSERT_TRUE(cluster.StartAll());
  WriteLoad load(cluster, 3, "m");
  ASSERT_TRUE(load.WaitForAcks(100, absl::Seconds(20)));
  auto& fourth = cluster.AddJoiningNode(4);
  ASSERT_TRUE(fourth.Start());
  auto admin = cluster.NewAdmin();
  ASSERT_TRUE(admin->AddLearner(4, fourth.peer_endpoint()).ok());
  ASSERT_TRUE(cluster.WaitUntil([&] { return admin->Promote(4).ok(); }, absl::Seconds(30)));
  ASSERT_TRUE(load.WaitForAcks(load.acked() + 100, absl::Seconds(20)));
  ASSERT_TRUE(admin->Remove(4).ok());
  EXPECT_EQ(fourth.Stop(), 0);
  ASSERT_TRUE(load.WaitForAcks(load.acked() + 100, absl::Seconds(20)));
  load.Stop();
  ExpectAllAcknowledgedWritesPresent(cluster, load.acked_writes());
}

TEST(ClusterTest, FiveNodesWithTwoDownStillServeWrites) {
  LocalCluster cluster("five", 5);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  // Take down two nodes, the leader among them.
  cluster.node(leader).Kill9();
  cluster.node(leader % 5 + 1).Kill9();
  auto client = cluster.NewClient(absl::Seconds(15));
  for (int i = 0; i < 20; ++i) {
    auto r = client->Put(absl::StrCat("five", i), "v");
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(client->Get("five19")->value, "v");
}

TEST(ClusterTest, ForceNewClusterRecoversFromAPermanentLossOfQuorum) {
  LocalCluster cluster("force-new", 3);
  ASSERT_TRUE(cluster.StartAll());
  auto client = cluster.NewClient();
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(client->Put(absl::StrCat("f", i), "v").ok());
  // Nodes 2 and 3 are gone for good; node 1 alone cannot elect itself.
  for (uint64_t n = 1; n <= 3; ++n) cluster.node(n).Kill9();
  std::filesystem::remove_all(cluster.node(2).data_dir());
  std::filesystem::remove_all(cluster.node(3).data_dir());
  cluster.node(1).AddFlag("--force-new-cluster");
  ASSERT_TRUE(cluster.node(1).Start());
  EXPECT_NE(
      cluster.node(1).ReadLog().find("group=1 --force-new-cluster: node 1 is now the only voter"),
      std::string::npos);
  auto alone = *Client::Connect(cluster.ClientOptionsFor({cluster.node(1).endpoint()}));
  auto got = alone->Get("f29");  // linearizable: node 1 leads a group of one
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->value, "v");
  ASSERT_TRUE(alone->Put("after", "forced").ok());
  // Restarted without the flag it stays a one-voter group, with everything kept.
  EXPECT_EQ(cluster.node(1).Stop(), 0);
  cluster.node(1).RemoveFlag("--force-new-cluster");
  ASSERT_TRUE(cluster.node(1).Start());
  ASSERT_TRUE(alone->Put("restarted", "ok").ok());
  // Others then join it as new members.
  kv::testing::KvdProcess second(2, cluster.node(2).data_dir(), cluster.node(2).port());
  second.AddFlag("--join");
  second.AddFlag("--peers=1=" + cluster.node(1).peer_endpoint());
  cluster.AddClusterFlags(second);
  second.set_wait_for_leader(false);
  ASSERT_TRUE(second.Start());
  auto admin = cluster.NewAdmin();
  ASSERT_TRUE(admin->AddLearner(2, second.peer_endpoint()).ok());
  ASSERT_TRUE(cluster.WaitUntil([&] { return admin->Promote(2).ok(); }, absl::Seconds(30)));
  auto via_second = *Client::Connect(cluster.ClientOptionsFor({second.endpoint()}));
  auto joined = via_second->Get("after");
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->value, "forced");
  ASSERT_TRUE(via_second->Put("two", "voters").ok());
}

}  // namespace
}  // namespace kv
