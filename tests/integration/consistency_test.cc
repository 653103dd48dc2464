// Consistency levels on real clusters: each test would fail if its level were weaker than
// promised. Faults are injected with signals to real processes: SIGSTOP makes a node lag or a
// leader be cut off (alive, not answering), kill -9 crashes it. See tests/README.md.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/linearizability.h"
#include "tests/support/local_cluster.h"
#include "tests/support/partition.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;
using kv::testing::Operation;

std::unique_ptr<Client> ClientFor(const std::string& endpoint, absl::Duration timeout,
                                  const std::string& session = "") {
  ClientOptions o;
  o.endpoints = {endpoint};
  o.timeout = timeout;
  o.session_token = session;
  return *Client::Connect(o);
}

ReadOptions Level(ReadConsistency c, absl::Duration staleness = absl::Milliseconds(500)) {
  ReadOptions r;
  r.consistency = c;
  r.max_staleness = staleness;
  return r;
}

uint64_t NowMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Records a history of puts and linearizable gets on 4 keys from 3 clients while `nemesis`
// runs, then checks it for linearizability. With `spread_reads`, the clients send their gets to
// the nodes in turn (two of three to followers, which serve them by ReadIndex).
void CheckHistoryUnder(LocalCluster& cluster, const std::function<void()>& nemesis,
                       bool spread_reads = false) {
  std::mutex mu;
  std::vector<Operation> history;
  std::atomic<bool> stop{false};
  std::atomic<int> value_seq{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
      o.timeout = absl::Seconds(3);
      o.spread_reads = spread_reads;
      auto client = *Client::Connect(o);
      std::mt19937 rng(static_cast<unsigned>(c + 11));
      for (int i = 0; i < 60 && !stop; ++i) {
        Operation op;
        op.key = absl::StrCat("p", rng() % 4);
        op.invoke = NowMicros();
        if (rng() % 2 == 0) {
          op.kind = Operation::Kind::kPut;
          op.value = absl::StrCat("v", value_seq++);
          auto r = client->Put(op.key, *op.value);
          if (!r.ok() && absl::IsAborted(r.status())) continue;
          op.complete = r.ok() ? NowMicros() : Operation::kUnknown;
        } else {
          op.kind = Operation::Kind::kGet;
          auto r = client->Get(op.key);
          if (!r.ok() && !absl::IsNotFound(r.status())) continue;
          op.complete = NowMicros();
          if (r.ok()) op.value = r->value;
        }
        std::lock_guard<std::mutex> lock(mu);
        history.push_back(op);
      }
    });
  }
  nemesis();
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_GT(history.size(), 40u);
  auto check = kv::testing::CheckLinearizable(history, 64);
  EXPECT_TRUE(check.ok) << check.explanation;
}

// Crash the leader, bring it back, freeze the new leader, thaw it.
void KillThenStopLeaders(LocalCluster& cluster) {
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  uint64_t leader = cluster.WaitForLeader();
  cluster.node(leader).Kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  ASSERT_TRUE(cluster.node(leader).Start());
  uint64_t second = cluster.WaitForLeader();
  cluster.node(second).SignalStop();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  cluster.node(second).SignalContinue();
}

TEST(ConsistencyTest, LinearizableHistoryUnderKillAndStop) {
  LocalCluster cluster("linearizable", 3);
  ASSERT_TRUE(cluster.StartAll());
  CheckHistoryUnder(cluster, [&] { KillThenStopLeaders(cluster); });
}

// The same with every client's reads spread over all three nodes: followers' ReadIndex reads
// under a crashed and then a frozen leader.
TEST(ConsistencyTest, LinearizableHistoryWithReadsSpreadOverFollowersUnderKillAndStop) {
  LocalCluster cluster("linearizable-spread", 3);
  ASSERT_TRUE(cluster.StartAll());
  CheckHistoryUnder(
      cluster, [&] { KillThenStopLeaders(cluster); },
      /*spread_reads=*/true);
}

TEST(ConsistencyTest, PartitionedOldLeaderServesNoStaleRead) {
  LocalCluster cluster("partition", 3);
  kv::testing::Partitioner net(cluster.UseSeparateUids());
  ASSERT_TRUE(net.error().empty()) << net.error();
  ASSERT_TRUE(cluster.StartAll());
  auto client = cluster.NewClient();
  ASSERT_TRUE(client->Put("x", "old").ok());
  uint64_t old_leader = cluster.WaitForLeader();
  auto direct = ClientFor(cluster.node(old_leader).endpoint(), absl::Seconds(3));
  ASSERT_EQ(direct->Get("x", Level(ReadConsistency::kLease))->value, "old");
  net.Isolate(old_leader);
  uint64_t new_leader = cluster.WaitForLeader(absl::Seconds(20), old_leader);
  ASSERT_NE(new_leader, 0u);
  ASSERT_TRUE(
      ClientFor(cluster.node(new_leader).endpoint(), absl::Seconds(5))->Put("x", "new").ok());
  // The old leader is alive and reachable by clients, but cut off from its peers: it must not
  // answer from its old state, with or without a round trip.
  for (auto level : {ReadConsistency::kLease, ReadConsistency::kLinearizable}) {
    auto r = direct->Get("x", Level(level));
    if (r.ok()) {
      EXPECT_EQ(r->value, "new") << "stale read from a partitioned old leader";
    }
  }
  net.HealAll();
  // After healing it follows the new leader and serves the new value.
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto r = direct->Get("x", Level(ReadConsistency::kLinearizable));
        return r.ok() && r->value == "new";
      },
      absl::Seconds(15)));
}

TEST(ConsistencyTest, DeposedLeaderAnswersItsPendingWritesAtOnce) {
  LocalCluster cluster("deposed-writes", 3);
  kv::testing::Partitioner net(cluster.UseSeparateUids());
  ASSERT_TRUE(net.error().empty()) << net.error();
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  auto stub = v1::KV::NewStub(
      grpc::CreateChannel(cluster.node(leader).endpoint(), grpc::InsecureChannelCredentials()));
  net.Isolate(leader);
  // Proposed while it still leads, never committed. When check-quorum deposes it, the caller
  // must hear "outcome unknown, retry" then, not wait out its deadline for an answer that the
  // deposed node can no longer give.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::PutRequest req;
  req.set_key("x");
  req.set_value("cut off");
  v1::PutResponse resp;
  grpc::Status s = stub->Put(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_NE(s.error_message().find("leadership changed"), std::string::npos) << s.error_message();
  net.HealAll();
  // It was never committed: once healed, nobody has it.
  auto client = cluster.NewClient();
  auto r = client->Get("x");
  ASSERT_TRUE(r.ok() || absl::IsNotFound(r.status())) << r.status();
  EXPECT_TRUE(absl::IsNotFound(r.status())) << "a write nobody acknowledged was applied";
}

TEST(ConsistencyTest, LinearizableHistoryUnderPartitions) {
  LocalCluster cluster("partition-history", 3);
  kv::testing::Partitioner net(cluster.UseSeparateUids());
  ASSERT_TRUE(net.error().empty()) << net.error();
  ASSERT_TRUE(cluster.StartAll());
  CheckHistoryUnder(cluster, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    uint64_t leader = cluster.WaitForLeader();
    net.Isolate(leader);  // cut off the leader
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    net.HealAll();
    uint64_t next = cluster.WaitForLeader();
    net.Isolate(next % 3 + 1);  // then a follower
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    net.HealAll();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
}

TEST(ConsistencyTest, DeposedLeaderServesNoStaleLeaseOrLinearizableRead) {
  LocalCluster cluster("deposed", 3);
  ASSERT_TRUE(cluster.StartAll());
  auto client = cluster.NewClient();
  ASSERT_TRUE(client->Put("x", "old").ok());
  uint64_t old_leader = cluster.WaitForLeader();
  // Warm the old leader's lease, then cut it off (frozen: it cannot learn anything).
  auto direct = ClientFor(cluster.node(old_leader).endpoint(), absl::Seconds(5));
  ASSERT_EQ(direct->Get("x", Level(ReadConsistency::kLease))->value, "old");
  cluster.node(old_leader).SignalStop();
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(20), old_leader), 0u);
  ASSERT_TRUE(client->Put("x", "new").ok());
  cluster.node(old_leader).SignalContinue();
  // Right after it thaws, the old leader must not answer from its old state at either level.
  for (auto level : {ReadConsistency::kLease, ReadConsistency::kLinearizable}) {
    auto r = direct->Get("x", Level(level));
    if (r.ok()) {
      EXPECT_EQ(r->value, "new") << "stale read from a deposed leader";
    }
  }
}

TEST(ConsistencyTest, SessionReadsThroughALaggingFollowerSeeOwnWrites) {
  LocalCluster cluster("session", 3);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  uint64_t follower = leader % 3 + 1;
  auto writer = ClientFor(cluster.node(leader).endpoint(), absl::Seconds(5));
  cluster.node(follower).SignalStop();  // the follower misses the write
  ASSERT_TRUE(writer->Put("mine", "written").ok());
  std::string token = writer->session_token();
  ASSERT_FALSE(token.empty());
  cluster.node(follower).SignalContinue();
  // Another process continues the session on the lagging follower.
  auto reader = ClientFor(cluster.node(follower).endpoint(), absl::Seconds(5), token);
  auto r = reader->Get("mine", Level(ReadConsistency::kSession));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, "written");
  // Monotonic reads: the token only moves forward.
  EXPECT_GE(std::stoull(reader->session_token()), std::stoull(token));
}

TEST(ConsistencyTest, BoundedStalenessNeverServesOlderThanTheBound) {
  LocalCluster cluster("bounded", 3);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  uint64_t follower = leader % 3 + 1;
  auto writer = ClientFor(cluster.node(leader).endpoint(), absl::Seconds(5));
  ASSERT_TRUE(writer->Put("b", "1").ok());
  cluster.node(follower).SignalStop();
  ASSERT_TRUE(writer->Put("b", "2").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  cluster.node(follower).SignalContinue();
  // The follower last heard from the leader over a second ago: with a 200 ms bound it must not
  // answer "1" from its own state.
  auto reader = ClientFor(cluster.node(follower).endpoint(), absl::Seconds(5));
  auto r = reader->Get("b", Level(ReadConsistency::kBoundedStaleness, absl::Milliseconds(200)));
  if (r.ok()) {
    EXPECT_EQ(r->value, "2");
  }
}

TEST(ConsistencyTest, EventualReadsReturnOnlyWrittenValues) {
  LocalCluster cluster("eventual", 3);
  ASSERT_TRUE(cluster.StartAll());
  std::set<std::string> written = {""};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::thread writer([&] {
    auto c = cluster.NewClient();
    for (int i = 0; i < 300 && !stop; ++i) {
      std::string v = absl::StrCat("e", i);
      {
        std::lock_guard<std::mutex> lock(mu);
        written.insert(v);  // recorded before the write can be visible anywhere
      }
      (void)c->Put("ev", v);
    }
  });
  std::vector<std::unique_ptr<Client>> readers;
  for (size_t n = 1; n <= cluster.size(); ++n) {
    readers.push_back(ClientFor(cluster.node(n).endpoint(), absl::Seconds(2)));
  }
  int reads = 0;
  for (int i = 0; i < 300; ++i) {
    auto r = readers[static_cast<size_t>(i) % readers.size()]->Get(
        "ev", Level(ReadConsistency::kEventual));
    std::string seen = r.ok() ? r->value : "";
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(written.contains(seen)) << "value never written: " << seen;
    ++reads;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(reads, 300);
}

TEST(ConsistencyTest, WriteAllWaitsForEveryVoter) {
  LocalCluster cluster("write-all", 3);
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  uint64_t follower = leader % 3 + 1;
  auto client = ClientFor(cluster.node(leader).endpoint(), absl::Seconds(2));
  WriteOptions all;
  all.consistency = WriteConsistency::kAll;
  cluster.node(follower).SignalStop();
  auto blocked = client->Put("all", "1", all);
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kFailedPrecondition) << blocked.status();
  // Committed by the majority all the same.
  EXPECT_EQ(client->Get("all")->value, "1");
  cluster.node(follower).SignalContinue();
  auto ok = ClientFor(cluster.node(leader).endpoint(), absl::Seconds(10))->Put("all", "2", all);
  ASSERT_TRUE(ok.ok()) << ok.status();
  // Acknowledged with ALL: every replica has it applied, so a local read anywhere sees it.
  for (size_t n = 1; n <= cluster.size(); ++n) {
    auto r = ClientFor(cluster.node(n).endpoint(), absl::Seconds(2))
                 ->Get("all", Level(ReadConsistency::kEventual));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->value, "2") << "node " << n;
  }
}

}  // namespace
}  // namespace kv
