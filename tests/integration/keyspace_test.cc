// Keyspaces on real clusters: created with range, hash and geo strategies, every request routed
// by the receiving node to the shard that owns its key, scans paged shard by shard in key order,
// geo placement by --region, and drops that refuse to lose data. Every wait is bounded.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "sharding/key_codec.h"
#include "storage/engine.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;

// Creates the keyspace once every node has registered itself (placement needs their labels).
absl::StatusOr<KeyspaceInfo> CreateWhenReady(LocalCluster& cluster, const KeyspaceSpec& spec) {
  auto admin = cluster.NewAdmin();
  bool registered = cluster.WaitUntil(
      [&] {
        auto nodes = admin->ListNodes();
        return nodes.ok() && nodes->size() == 3;
      },
      absl::Seconds(20));
  if (!registered) return absl::DeadlineExceededError("the nodes did not register");
  return admin->CreateKeyspace(spec);
}

// Starts the cluster and creates a range keyspace of one shard.
absl::StatusOr<KeyspaceInfo> StartWithRangeKeyspace(LocalCluster& cluster,
                                                    const std::string& name) {
  if (!cluster.StartAll()) return absl::UnavailableError("the cluster did not start");
  KeyspaceSpec spec;
  spec.name = name;
  return CreateWhenReady(cluster, spec);
}

std::unique_ptr<Client> ClientOf(LocalCluster& cluster, const std::string& keyspace,
                                 uint64_t node = 1) {
  ClientOptions o = cluster.ClientOptionsFor({cluster.node(node).endpoint()});
  o.keyspace = keyspace;
  o.timeout = absl::Seconds(10);
  return *Client::Connect(o);
}

// Every key a scan returns, page after page, passing each continuation token back unchanged
// (at most `max_pages` pages: a scan that never ends fails the test instead of hanging it).
absl::StatusOr<std::vector<std::string>> ScanAll(Client& client, ScanRequest scan,
                                                 int max_pages = 50) {
  std::vector<std::string> keys;
  for (int page = 0; page < max_pages; ++page) {
    auto p = client.Scan(scan);
    if (!p.ok()) return p.status();
    for (const auto& kv : p->kvs) keys.push_back(kv.key);
    if (p->continuation_token.empty()) return keys;
    scan.continuation_token = p->continuation_token;
  }
  return absl::DeadlineExceededError("the scan did not end");
}

// Every acknowledged write is there with at least its version, through every node.
void ExpectAckedReadBack(LocalCluster& cluster, const std::string& keyspace,
                         const std::map<std::string, uint64_t>& acked) {
  for (uint64_t node = 1; node <= 3; ++node) {
    auto reader = ClientOf(cluster, keyspace, node);
    for (const auto& [key, version] : acked) {
      auto got = reader->Get(key);
      ASSERT_TRUE(got.ok()) << key << " via node " << node << ": " << got.status();
      EXPECT_GE(got->version, version) << key;
    }
  }
}

// Overwrites keys k000..k199 round and round through one node until stopped (at most 20 000
// puts), remembering the version of each key's latest acknowledged put.
class OverwritingWriter {
 public:
  OverwritingWriter(LocalCluster& cluster, const std::string& keyspace, uint64_t node) {
    thread_ = std::thread([this, &cluster, keyspace, node] {
      auto w = ClientOf(cluster, keyspace, node);
      for (int i = 0; !stop_ && i < 20000; ++i) {
        std::string key = absl::StrCat("k", absl::Dec(i % 200, absl::kZeroPad3));
        absl::Time started = absl::Now();
        auto r = w->Put(key, absl::StrCat("v", i));
        std::lock_guard<std::mutex> lock(mu_);
        longest_put_ = std::max(longest_put_, absl::Now() - started);
        if (r.ok()) {
          acked_[key] = r->version;
        } else {
          ++errors_;
        }
      }
    });
  }
  ~OverwritingWriter() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t acks() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_.size();
  }
  // key -> version of its latest acknowledged put.
  std::map<std::string, uint64_t> acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  uint64_t highest_version() {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t highest = 0;
    for (const auto& [key, version] : acked_) highest = std::max(highest, version);
    return highest;
  }
  // Acknowledgements of keys from `first` on are counted again from now.
  void ForgetFrom(const std::string& first) {
    std::lock_guard<std::mutex> lock(mu_);
    acked_.erase(acked_.lower_bound(first), acked_.end());
  }
  int errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }
  // The longest put since the last call (a benchmark figure, printed, never asserted).
  absl::Duration TakeLongestPut() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(longest_put_, absl::ZeroDuration());
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, uint64_t> acked_;
  int errors_ = 0;
  absl::Duration longest_put_;
  std::thread thread_;
};

TEST(Keyspaces, RangeAndHashKeyspacesServeEveryKeyAtItsShard) {
  LocalCluster cluster("ks-range", 3);
  ASSERT_TRUE(cluster.StartAll());
  KeyspaceSpec range;
  range.name = "orders";
  range.split_points = {"g", "p"};
  auto created = CreateWhenReady(cluster, range);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ(created->shards.size(), 3u);
  EXPECT_EQ(created->shards[1].start, "g");
  EXPECT_EQ(created->shards[1].end, "p");
  KeyspaceSpec hash;
  hash.name = "sessions";
  hash.strategy = "hash";
  hash.shards = 4;
  ASSERT_TRUE(CreateWhenReady(cluster, hash).ok());
  EXPECT_EQ(cluster.NewAdmin()->CreateKeyspace(range).status().code(),
            absl::StatusCode::kAlreadyExists);

  auto orders = ClientOf(cluster, "orders", 2);
  auto sessions = ClientOf(cluster, "sessions", 3);
  auto plain = ClientOf(cluster, "");
  std::vector<std::string> keys = {"apple", "grape", "kiwi", "melon", "peach", "zucchini"};
  for (const auto& k : keys) {
    // Replicas are created as the descriptors apply on each node: retry briefly at first.
    ASSERT_TRUE(cluster.WaitUntil([&] { return orders->Put(k, "o-" + k).ok(); }, absl::Seconds(15)))
        << k;
    ASSERT_TRUE(
        cluster.WaitUntil([&] { return sessions->Put(k, "s-" + k).ok(); }, absl::Seconds(15)))
        << k;
  }
  for (const auto& k : keys) {
    EXPECT_EQ(orders->Get(k)->value, "o-" + k);
    EXPECT_EQ(sessions->Get(k)->value, "s-" + k);
    EXPECT_TRUE(absl::IsNotFound(plain->Get(k).status())) << "keyspaces do not share keys";
  }
  // A scan over the range keyspace returns every key in order, a shard per page at most.
  auto seen = ScanAll(*orders, ScanRequest{});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, keys);
  // A scan of the hash keyspace walks its four shards in slot order: every key of the range
  // exactly once, paged by position (limit 2: several pages per shard).
  ScanRequest slots;
  slots.start = "b";  // apple is outside the range
  slots.limit = 2;
  auto hashed = ScanAll(*sessions, slots);
  ASSERT_TRUE(hashed.ok()) << hashed.status();
  EXPECT_EQ(std::multiset<std::string>(hashed->begin(), hashed->end()),
            std::multiset<std::string>(keys.begin() + 1, keys.end()));
  // The shards own their keys on disk too: the middle shard holds grape, kiwi and melon.
  auto described = cluster.NewAdmin()->DescribeKeyspace("orders");
  ASSERT_TRUE(described.ok());
  ASSERT_EQ(described->shards.size(), 3u);
  for (const auto& s : described->shards) EXPECT_EQ(s.replicas.size(), 3u);
  // Unknown keyspaces are refused with a message, not guessed at.
  auto nowhere = ClientOf(cluster, "nowhere");
  EXPECT_TRUE(absl::IsNotFound(nowhere->Put("k", "v").status()));
  // Drop refuses a keyspace holding keys, unless forced; then its keys are gone.
  auto admin = cluster.NewAdmin();
  EXPECT_EQ(admin->DropKeyspace("orders", false).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(admin->DropKeyspace("orders", true).ok());
  EXPECT_TRUE(cluster.WaitUntil([&] { return absl::IsNotFound(orders->Get("apple").status()); },
                                absl::Seconds(10)));
  auto left = admin->ListKeyspaces();
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[0].name, "default");
  EXPECT_EQ((*left)[1].name, "sessions");
  EXPECT_EQ(admin->DropKeyspace("default", true).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Keyspaces, EveryReadLevelWriteLevelCasAndRetryHoldsOnEveryShard) {
  LocalCluster cluster("ks-levels", 3);
  ASSERT_TRUE(cluster.StartAll());
  KeyspaceSpec hash;
  hash.name = "tokens";
  hash.strategy = "hash";
  hash.shards = 4;
  ASSERT_TRUE(CreateWhenReady(cluster, hash).ok());
  KeyspaceSpec range;
  range.name = "ledger";
  range.split_points = {"k4", "k8"};
  ASSERT_TRUE(CreateWhenReady(cluster, range).ok());
  auto raw = v1::KV::NewStub(
      grpc::CreateChannel(cluster.node(2).endpoint(), grpc::InsecureChannelCredentials()));
  uint64_t seq = 0;
  for (const std::string ks : {"tokens", "ledger"}) {
    auto c = ClientOf(cluster, ks, 1 + seq % 3);
    std::set<uint64_t> shards_written;
    for (int i = 0; i < 20; ++i) {
      std::string key = absl::StrCat("k", i);
      WriteOptions all;
      all.consistency = WriteConsistency::kAll;
      absl::StatusOr<WriteResult> put;
      ASSERT_TRUE(cluster.WaitUntil([&] { return (put = c->Put(key, "v-" + key, all)).ok(); },
                                    absl::Seconds(15)))
          << ks << "/" << key << ": " << put.status();
      // Applied by every voter: every read level sees it, on whichever replica serves it.
      for (auto level : {ReadConsistency::kLinearizable, ReadConsistency::kLease,
                         ReadConsistency::kBoundedStaleness, ReadConsistency::kSession,
                         ReadConsistency::kEventual}) {
        ReadOptions read;
        read.consistency = level;
        read.max_staleness = absl::Seconds(5);
        auto got = c->Get(key, read);
        ASSERT_TRUE(got.ok()) << ks << "/" << key << " level " << static_cast<int>(level) << ": "
                              << got.status();
        EXPECT_EQ(got->value, "v-" + key);
        EXPECT_EQ(got->version, put->version);
      }
      auto stale_cas = c->CompareAndSwap(key, put->version + 1000, "no");
      ASSERT_TRUE(stale_cas.ok());
      EXPECT_FALSE(stale_cas->succeeded);
      ASSERT_TRUE(stale_cas->current.has_value());
      EXPECT_EQ(stale_cas->current->value, "v-" + key);
      auto cas = c->CompareAndSwap(key, put->version, "cas-" + key);
      ASSERT_TRUE(cas.ok());
      EXPECT_TRUE(cas->succeeded);
      EXPECT_GT(cas->version, put->version);
      // The same write sent twice with one request id is applied once: the retry gets the
      // first answer.
      v1::PutRequest req;
      req.set_keyspace(ks);
      req.set_key(key);
      req.set_value("once-" + key);
      req.mutable_write()->mutable_request_id()->set_client_id(4242);
      req.mutable_write()->mutable_request_id()->set_seq(++seq);
      req.mutable_write()->mutable_request_id()->set_first_incomplete_seq(seq);
      // A node answers UNAVAILABLE while a shard's leadership moves (the rebalancer spreads
      // leaders): sent again with the same request id, as a client does.
      auto raw_put = [&](v1::PutResponse* out) {
        grpc::Status st;
        for (int attempt = 0; attempt < 20; ++attempt) {
          grpc::ClientContext ctx;
          st = raw->Put(&ctx, req, out);
          if (st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
          absl::SleepFor(absl::Milliseconds(100));
        }
        return st;
      };
      v1::PutResponse first, again;
      grpc::Status st = raw_put(&first);
      ASSERT_TRUE(st.ok()) << st.error_message();
      st = raw_put(&again);
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_EQ(again.version(), first.version()) << "a retry is not applied again";
      shards_written.insert(first.header().shard().shard_id());
      auto del = c->Delete(key);
      ASSERT_TRUE(del.ok());
      EXPECT_TRUE(del->existed);
      EXPECT_TRUE(absl::IsNotFound(c->Get(key).status()));
      EXPECT_TRUE(c->CompareAndSwap(key, 0, "absent-then-" + key)->succeeded);
    }
    EXPECT_EQ(shards_written.size(), ks == "tokens" ? 4u : 3u) << "every shard was exercised";
  }
}

TEST(Keyspaces, SplitsOnlineUnderWritesLoseNothingAndKeepVersionsGrowing) {
  LocalCluster cluster("ks-split", 3);
  auto created = StartWithRangeKeyspace(cluster, "events");
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ(created->shards.size(), 1u);
  uint64_t first_shard = created->shards[0].shard_id;
  auto client = ClientOf(cluster, "events", 2);
  ASSERT_TRUE(cluster.WaitUntil([&] { return client->Put("k000", "v").ok(); }, absl::Seconds(15)));
  uint64_t before = client->Get("k000")->version;

  // A writer overwrites 200 keys round and round while the shard splits twice.
  OverwritingWriter writer(cluster, "events", 1);
  ASSERT_TRUE(cluster.WaitUntil([&] { return writer.acks() >= 100; }, absl::Seconds(20)));
  auto admin = cluster.NewAdmin();
  uint64_t child = 0;
  writer.TakeLongestPut();
  absl::Time split_started = absl::Now();
  auto after = admin->SplitShard(first_shard, std::string("k100"), &child);
  absl::Duration split_took = absl::Now() - split_started;
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->shards.size(), 2u);
  EXPECT_EQ(after->shards[0].end, "k100");
  EXPECT_EQ(after->shards[1].start, "k100");
  EXPECT_EQ(after->shards[1].shard_id, child);
  EXPECT_EQ(after->shards[1].generation, 2u);
  // The child splits again, in the middle of its keys.
  auto again = admin->SplitShard(child, std::nullopt);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->shards.size(), 3u);
  size_t at_split = writer.acks();
  // Writes go on after the splits: the writer overwrites keys, so count acknowledgements of the
  // upper half's keys again from here.
  writer.ForgetFrom("k100");
  EXPECT_TRUE(cluster.WaitUntil([&] { return writer.acks() >= std::max<size_t>(at_split, 200); },
                                absl::Seconds(20)))
      << "writes to the moved keys go on after the splits, and every key gets written";
  writer.Stop();
  absl::Duration longest_put = writer.TakeLongestPut();
  int errors = writer.errors();
  std::map<std::string, uint64_t> acked = writer.acked();
  std::printf(
      "split by command took %s; the longest put from the first split to the end: %s; %d puts "
      "failed\n",
      absl::FormatDuration(split_took).c_str(), absl::FormatDuration(longest_put).c_str(), errors);
  EXPECT_EQ(errors, 0) << "a split is invisible to applications: the library retries for them";

  ExpectAckedReadBack(cluster, "events", acked);
  // Versions keep growing across a split: the child's log continues above the parent's.
  auto put = client->Put("k000", "after");
  ASSERT_TRUE(put.ok());
  EXPECT_GT(put->version, before);
  auto moved = client->Put("k150", "after");
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_GT(moved->version, acked["k150"]);
  // A scan sees every key once, in order, across the three shards.
  ScanRequest scan;
  scan.limit = 64;
  auto seen = ScanAll(*client, scan);
  ASSERT_TRUE(seen.ok()) << seen.status();
  ASSERT_EQ(seen->size(), 200u);
  EXPECT_TRUE(std::is_sorted(seen->begin(), seen->end()));
  // The halves survive a restart of a node: its replicas reopen with their own spans.
  cluster.node(3).Kill9();
  ASSERT_TRUE(cluster.node(3).Start());
  auto via3 = ClientOf(cluster, "events", 3);
  EXPECT_TRUE(cluster.WaitUntil([&] { return via3->Get("k199").ok(); }, absl::Seconds(15)));
  EXPECT_EQ(admin->DescribeKeyspace("events")->shards.size(), 3u);
}

TEST(Keyspaces, AClientTenSplitsStaleReachesEveryKeyWithAtMostOneRerouteAShard) {
  LocalCluster cluster("ks-stale", 3);
  auto created = StartWithRangeKeyspace(cluster, "ledger");
  ASSERT_TRUE(created.ok()) << created.status();
  auto stale = ClientOf(cluster, "ledger", 1);
  std::map<std::string, uint64_t> versions;
  for (int i = 0; i < 220; ++i) {
    std::string key = absl::StrCat("k", absl::Dec(i, absl::kZeroPad3));
    absl::StatusOr<WriteResult> put;
    ASSERT_TRUE(
        cluster.WaitUntil([&] { return (put = stale->Put(key, "v")).ok(); }, absl::Seconds(15)))
        << put.status();
    versions[key] = put->version;
  }
  RoutingStats before = stale->routing_stats();
  EXPECT_EQ(before.cached_shards, 1u);
  // Ten splits the stale client hears nothing of: k020, k040, ... k200, each of the newest child.
  auto admin = cluster.NewAdmin();
  uint64_t shard = created->shards[0].shard_id;
  for (int i = 1; i <= 10; ++i) {
    uint64_t child = 0;
    auto after =
        admin->SplitShard(shard, absl::StrCat("k", absl::Dec(i * 20, absl::kZeroPad3)), &child);
    ASSERT_TRUE(after.ok()) << "split " << i << ": " << after.status();
    shard = child;
  }
  auto described = admin->DescribeKeyspace("ledger");
  ASSERT_TRUE(described.ok());
  ASSERT_EQ(described->shards.size(), 11u);
  // Reading every key in order, the client's cache is corrected at most once per shard (a
  // typed redirect or a rerouted answer), and the application sees neither.
  std::map<uint64_t, uint64_t> corrections;  // shard id -> corrections while reading its keys
  for (const auto& [key, version] : versions) {
    RoutingStats was = stale->routing_stats();
    auto got = stale->Get(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status();
    EXPECT_EQ(got->version, version) << key;
    RoutingStats now = stale->routing_stats();
    for (const auto& s : described->shards) {
      if (key >= s.start && (s.end.empty() || key < s.end)) {
        corrections[s.shard_id] += (now.redirects - was.redirects) + (now.reroutes - was.reroutes);
      }
    }
  }
  for (const auto& [id, n] : corrections) EXPECT_LE(n, 1u) << "shard " << id;
  RoutingStats after = stale->routing_stats();
  EXPECT_GE(after.reroutes + after.redirects, before.reroutes + before.redirects + 1)
      << "the stale cache was corrected";
  EXPECT_EQ(after.cached_shards, 11u) << "it learned every shard";
  std::printf("stale client: %lu redirects, %lu rerouted answers over 220 keys in 11 shards\n",
              static_cast<unsigned long>(after.redirects - before.redirects),
              static_cast<unsigned long>(after.reroutes - before.reroutes));
}

TEST(Keyspaces, AShardSplitsBySizeAndEveryKeyStaysReadable) {
  LocalCluster cluster("ks-size", 3,
                       {"--split-size-bytes=65536", "--split-min-interval-seconds=1"});
  ASSERT_TRUE(StartWithRangeKeyspace(cluster, "blobs").ok());
  auto client = ClientOf(cluster, "blobs");
  std::string value(1024, 'b');
  for (int i = 0; i < 400; ++i) {
    std::string key = absl::StrCat("b", absl::Dec(i, absl::kZeroPad3));
    ASSERT_TRUE(cluster.WaitUntil([&] { return client->Put(key, value).ok(); }, absl::Seconds(10)))
        << key;
  }
  auto admin = cluster.NewAdmin();
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto k = admin->DescribeKeyspace("blobs");
        return k.ok() && k->shards.size() >= 2;
      },
      absl::Seconds(30)))
      << "400 KiB in a keyspace whose shards split at 64 KiB";
  for (int i = 0; i < 400; i += 7) {
    auto got = client->Get(absl::StrCat("b", absl::Dec(i, absl::kZeroPad3)));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->value, value);
  }
}

TEST(Keyspaces, AShardSplitsByLoadButNeverAtASingleHotKey) {
  LocalCluster cluster("ks-load", 3,
                       {"--split-size-bytes=0", "--split-load-qps=20", "--split-load-seconds=2",
                        "--split-min-interval-seconds=1"});
  ASSERT_TRUE(cluster.StartAll());
  KeyspaceSpec spec;
  spec.name = "clicks";
  ASSERT_TRUE(CreateWhenReady(cluster, spec).ok());
  auto client = ClientOf(cluster, "clicks");
  auto admin = cluster.NewAdmin();
  auto shards = [&] {
    auto k = admin->DescribeKeyspace("clicks");
    return k.ok() ? k->shards.size() : 0;
  };
  // One key, hammered: over the rate, but a single key cannot be split.
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (absl::Now() < until) (void)client->Put("hot", "x");
  EXPECT_EQ(shards(), 1u);
  bool reported = false;
  for (uint64_t n = 1; n <= 3; ++n) {
    reported = reported ||
               cluster.node(n).ReadLog().find("a single key cannot be split") != std::string::npos;
  }
  EXPECT_TRUE(reported) << "the hot key is reported";
  // Spread over many keys: the shard splits where its requests divide evenly.
  until = absl::Now() + absl::Seconds(20);
  for (int i = 0; absl::Now() < until && shards() < 2; ++i) {
    (void)client->Put(absl::StrCat("k", absl::Dec(i % 200, absl::kZeroPad3)), "y");
  }
  EXPECT_GE(shards(), 2u);
}

TEST(Keyspaces, AParentLeaderKilledMidSplitLosesNoAcknowledgedWrite) {
  LocalCluster cluster("ks-kill", 3);
  auto created = StartWithRangeKeyspace(cluster, "ledger");
  ASSERT_TRUE(created.ok()) << created.status();
  uint64_t shard = created->shards[0].shard_id;
  std::atomic<bool> stop{false};
  std::map<std::string, uint64_t> acked;
  std::mutex mu;
  std::thread writer([&] {
    ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
    o.keyspace = "ledger";
    auto w = *Client::Connect(o);
    for (int i = 0; !stop && i < 20000; ++i) {
      std::string key = absl::StrCat("k", absl::Dec(i % 300, absl::kZeroPad3));
      auto r = w->Put(key, absl::StrCat("v", i));
      if (r.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        acked[key] = r->version;
      }
    }
  });
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return acked.size() >= 300;
      },
      absl::Seconds(20)));
  auto admin = cluster.NewAdmin();
  uint64_t leader = 0;
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto k = admin->DescribeKeyspace("ledger");
        if (k.ok() && !k->shards.empty()) leader = k->shards[0].leader_id;
        return leader != 0;
      },
      absl::Seconds(10)));
  // The split is proposed while its shard's leader dies: it applies everywhere or nowhere.
  std::thread splitter([&] { (void)cluster.NewAdmin()->SplitShard(shard, std::string("k150")); });
  absl::SleepFor(absl::Milliseconds(3));
  cluster.node(leader).Kill9();
  splitter.join();
  ASSERT_TRUE(cluster.node(leader).Start());
  // The cluster takes writes again after the restart (the writer keeps overwriting k000..k299).
  auto probe = ClientOf(cluster, "ledger");
  EXPECT_TRUE(
      cluster.WaitUntil([&] { return probe->Put("k000", "after").ok(); }, absl::Seconds(15)));
  stop = true;
  writer.join();
  // Every acknowledged write is there, through every node, whichever way the split went.
  for (uint64_t node = 1; node <= 3; ++node) {
    auto reader = ClientOf(cluster, "ledger", node);
    for (const auto& [key, version] : acked) {
      absl::StatusOr<KeyValue> got = absl::UnavailableError("not read");
      cluster.WaitUntil(
          [&] {
            got = reader->Get(key);
            return got.ok();
          },
          absl::Seconds(10));
      ASSERT_TRUE(got.ok()) << key << " via node " << node << ": " << got.status();
      EXPECT_GE(got->version, version) << key;
    }
  }
  // And the shards still partition the keyspace: a scan sees every key once, in order.
  auto client = ClientOf(cluster, "ledger");
  auto seen = ScanAll(*client, ScanRequest{});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->size(), 300u);
  EXPECT_TRUE(std::is_sorted(seen->begin(), seen->end()));
}

TEST(Keyspaces, FiveNodesInThreeRegionsKeepGeoDataInItsRegion) {
  LocalCluster cluster("ks-five", 5);
  const char* region[] = {"", "eu", "eu", "us", "us", "ap"};
  for (uint64_t id = 1; id <= 5; ++id)
    cluster.node(id).AddFlag(absl::StrCat("--region=", region[id]));
  ASSERT_TRUE(cluster.StartAll());
  auto admin = cluster.NewAdmin();
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto nodes = admin->ListNodes();
        return nodes.ok() && nodes->size() == 5;
      },
      absl::Seconds(20)));
  KeyspaceSpec geo;
  geo.name = "people";
  geo.strategy = "geo";
  geo.regions = {"eu", "us"};
  geo.replicas = 2;
  auto created = admin->CreateKeyspace(geo);
  ASSERT_TRUE(created.ok()) << created.status();
  // A range keyspace whose 3-replica shards are not on every node, written through a client
  // that knows only node 5: redirects and the routing cache take each key to its shard.
  KeyspaceSpec range;
  range.name = "catalog";
  range.split_points = {"h", "p"};
  ASSERT_TRUE(admin->CreateKeyspace(range).ok());
  auto via5 = ClientOf(cluster, "catalog", 5);
  auto people = ClientOf(cluster, "people", 5);
  for (int i = 0; i < 60; ++i) {
    std::string key = absl::StrCat(std::string(1, static_cast<char>('a' + i % 26)), "-", i);
    ASSERT_TRUE(cluster.WaitUntil([&] { return via5->Put(key, "c").ok(); }, absl::Seconds(15)))
        << key;
    for (const char* r : {"eu", "us"}) {
      std::string user = absl::StrCat(r, "/user", i);
      ASSERT_TRUE(cluster.WaitUntil([&] { return people->Put(user, r).ok(); }, absl::Seconds(15)))
          << user;
    }
  }
  for (int i = 0; i < 60; ++i) {
    EXPECT_EQ(
        via5->Get(absl::StrCat(std::string(1, static_cast<char>('a' + i % 26)), "-", i))->value,
        "c");
  }
  // On disk, not by the map: every node's RocksDB holds only its own region's geo keys.
  uint64_t keyspace_id = created->id;
  int checked = 0;
  for (uint64_t id = 1; id <= 5; ++id) {
    ASSERT_EQ(cluster.node(id).Stop(), 0);
    auto engine = storage::Engine::Open(storage::EngineOptions{cluster.node(id).data_dir()});
    ASSERT_TRUE(engine.ok()) << engine.status();
    std::string prefix = sharding::KeyspacePrefix(keyspace_id);
    for (auto it = (*engine)->NewIterator(storage::Column::kData, prefix,
                                          sharding::KeyspaceEnd(keyspace_id));
         it->Valid(); it->Next()) {
      std::string_view user = it->key().substr(8);
      EXPECT_TRUE(user.starts_with(absl::StrCat(region[id], "/")))
          << "node " << id << " (" << region[id] << ") holds " << user;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * 60 * 2) << "each region's 60 keys on its two nodes";
}

TEST(Keyspaces, MergesUnderWritesLoseNothingAndKeepVersionsGrowing) {
  LocalCluster cluster("ks-merge", 3);
  ASSERT_TRUE(cluster.StartAll());
  KeyspaceSpec spec;
  spec.name = "ledger";
  spec.split_points = {"k067", "k133"};
  auto created = CreateWhenReady(cluster, spec);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ(created->shards.size(), 3u);
  // A writer overwrites 200 keys over the three shards while they merge into one.
  OverwritingWriter writer(cluster, "ledger", 2);
  ASSERT_TRUE(cluster.WaitUntil([&] { return writer.acks() >= 200; }, absl::Seconds(30)));
  auto admin = cluster.NewAdmin();
  std::vector<uint64_t> absorbed;
  writer.TakeLongestPut();  // from here on: the merges
  for (int merge = 0; merge < 2; ++merge) {
    auto before = admin->DescribeKeyspace("ledger");
    ASSERT_TRUE(before.ok());
    uint64_t survivor = 0, gone = 0;
    absl::StatusOr<KeyspaceInfo> after = absl::UnknownError("not tried");
    // A merge refused because a shard changed meanwhile (a leadership hand-over) is retried.
    absl::Duration took;
    ASSERT_TRUE(cluster.WaitUntil(
        [&] {
          absl::Time started = absl::Now();
          after = admin->MergeShard(before->shards[0].shard_id, &survivor, &gone);
          took = absl::Now() - started;
          return after.ok();
        },
        absl::Seconds(30)))
        << after.status();
    std::printf("merge %d (shard %llu into %llu) took %s\n", merge + 1,
                static_cast<unsigned long long>(gone), static_cast<unsigned long long>(survivor),
                absl::FormatDuration(took).c_str());
    absorbed.push_back(gone);
    EXPECT_TRUE(survivor == before->shards[0].shard_id || survivor == before->shards[1].shard_id);
    EXPECT_EQ(after->shards.size(), before->shards.size() - 1);
    EXPECT_EQ(after->shards[0].start, "");
  }
  absl::Duration longest_during = writer.TakeLongestPut();
  size_t at_merge = writer.acks();
  uint64_t highest = writer.highest_version();
  writer.ForgetFrom("");  // counted again: the writes after the merges
  EXPECT_TRUE(cluster.WaitUntil([&] { return writer.acks() >= std::max<size_t>(at_merge, 200); },
                                absl::Seconds(30)));
  writer.Stop();
  std::printf("%d puts failed during two merges; the longest put during them took %s\n",
              writer.errors(), absl::FormatDuration(longest_during).c_str());
  EXPECT_EQ(writer.errors(), 0)
      << "a merge is invisible to applications: the library retries for them";
  EXPECT_GT(writer.highest_version(), highest) << "versions keep growing over the merged span";
  std::map<std::string, uint64_t> acked = writer.acked();
  auto one = admin->DescribeKeyspace("ledger");
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->shards.size(), 1u);
  EXPECT_EQ(one->shards[0].end, "");
  ExpectAckedReadBack(cluster, "ledger", acked);
  ScanRequest scan;
  scan.limit = 500;
  auto seen = ScanAll(*ClientOf(cluster, "ledger", 3), scan);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->size(), 200u);
  // After a restart, no node reopens an absorbed shard, and the merged one serves every key.
  for (uint64_t node = 1; node <= 3; ++node) {
    ASSERT_EQ(cluster.node(node).Stop(), 0);
    ASSERT_TRUE(cluster.node(node).Start());
  }
  for (uint64_t node = 1; node <= 3; ++node) {
    auto groups = cluster.NewAdminFor(node)->ListGroups();
    ASSERT_TRUE(groups.ok()) << groups.status();
    for (const auto& g : *groups) {
      for (uint64_t a : absorbed) {
        EXPECT_FALSE(g.id == a && g.hosted_here) << "node " << node << " reopened shard " << a;
      }
    }
  }
  auto reader = ClientOf(cluster, "ledger", 1);
  ASSERT_TRUE(cluster.WaitUntil([&] { return reader->Get("k000").ok(); }, absl::Seconds(20)));
  ExpectAckedReadBack(cluster, "ledger", acked);
}

TEST(Keyspaces, SmallColdNeighboursMergeByThemselves) {
  LocalCluster cluster("ks-automerge", 3, {"--merge-after-seconds=2"});
  ASSERT_TRUE(cluster.StartAll());
  KeyspaceSpec spec;
  spec.name = "quiet";
  spec.split_points = {"h", "p"};
  auto created = CreateWhenReady(cluster, spec);
  ASSERT_TRUE(created.ok()) << created.status();
  auto client = ClientOf(cluster, "quiet");
  std::map<std::string, uint64_t> acked;
  for (const char* key : {"apple", "kiwi", "zebra"}) {
    absl::StatusOr<WriteResult> put = absl::UnknownError("not tried");
    ASSERT_TRUE(cluster.WaitUntil(
        [&] {
          put = client->Put(key, "v");
          return put.ok();
        },
        absl::Seconds(15)));
    acked[key] = put->version;
  }
  auto admin = cluster.NewAdmin();
  bool merged = cluster.WaitUntil(
      [&] {
        auto ks = admin->DescribeKeyspace("quiet");
        return ks.ok() && ks->shards.size() == 1;
      },
      absl::Seconds(60));
  auto left = admin->DescribeKeyspace("quiet");
  EXPECT_TRUE(merged) << (left.ok() ? absl::StrCat(left->shards.size(), " shards left")
                                    : left.status().ToString());
  ExpectAckedReadBack(cluster, "quiet", acked);
}

TEST(Keyspaces, KvctlCreatesListsSplitsAndDropsKeyspaces) {
  LocalCluster cluster("ks-kvctl", 3);
  ASSERT_TRUE(cluster.StartAll());
  auto kvctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(1).endpoint(),
                 "--admin-token-file=" + cluster.admin_token_file(), "-o", "json"});
    return kv::testing::RunProgram(args);
  };
  kv::testing::RunResult created;
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        created = kvctl({"keyspace", "create", "things", "--split-points", "m"});
        return created.exit_code == 0;
      },
      absl::Seconds(20)))
      << created.err;
  auto info = nlohmann::json::parse(created.out);
  EXPECT_EQ(info["name"], "things");
  ASSERT_EQ(info["shards"].size(), 2u);
  EXPECT_EQ(info["shards"][0]["end"], "m");
  EXPECT_EQ(kvctl({"keyspace", "create", "Bad Name"}).exit_code, 2) << "a usage error";
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        return kvctl({"--keyspace", "things", "put", "zebra", "1"}).exit_code == 0;
      },
      absl::Seconds(15)));
  auto got = kvctl({"get", "zebra", "--keyspace", "things"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(nlohmann::json::parse(got.out)["value"], "1");
  EXPECT_EQ(kvctl({"get", "zebra"}).exit_code, 1) << "not in the default keyspace";
  uint64_t upper = info["shards"][1]["shard_id"];
  auto split = kvctl({"shard", "split", std::to_string(upper), "--at", "t"});
  ASSERT_EQ(split.exit_code, 0) << split.err;
  EXPECT_EQ(nlohmann::json::parse(split.out)["shards"].size(), 3u);
  auto shards = kvctl({"shards"});
  ASSERT_EQ(shards.exit_code, 0) << shards.err;
  auto all = nlohmann::json::parse(shards.out)["keyspaces"];
  ASSERT_EQ(all.size(), 2u) << "default and things";
  EXPECT_EQ(all[1]["shards"].size(), 3u);
  for (const auto& shard : all[1]["shards"]) {
    EXPECT_EQ(shard.value("placement", ""), "ok") << "nothing to move on a settled cluster";
  }
  EXPECT_NE(kvctl({"keyspace", "drop", "things"}).exit_code, 0) << "it holds a key";
  EXPECT_EQ(kvctl({"keyspace", "drop", "things", "--force"}).exit_code, 0);
  EXPECT_EQ(kvctl({"keyspace", "describe", "things"}).exit_code, 1);
}

TEST(Keyspaces, GeoShardsLiveOnlyOnTheirRegionsNodes) {
  LocalCluster cluster("ks-geo", 3);
  cluster.node(1).AddFlag("--region=eu");
  cluster.node(2).AddFlag("--region=eu");
  cluster.node(3).AddFlag("--region=us");
  ASSERT_TRUE(cluster.StartAll());
  KeyspaceSpec geo;
  geo.name = "users";
  geo.strategy = "geo";
  geo.regions = {"eu", "us"};
  geo.replicas = 2;
  // us has one node: two replicas cannot be placed there, and nothing is placed elsewhere.
  auto refused = CreateWhenReady(cluster, geo);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("us"), std::string::npos);
  geo.replicas = 1;
  auto created = CreateWhenReady(cluster, geo);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ(created->shards.size(), 2u);
  EXPECT_EQ(created->shards[0].region, "eu");
  EXPECT_EQ(created->shards[0].replicas.size(), 1u);
  EXPECT_LE(created->shards[0].replicas[0], 2u) << "an eu shard on an eu node";
  EXPECT_EQ(created->shards[1].region, "us");
  EXPECT_EQ(created->shards[1].replicas, std::vector<uint64_t>{3});
  // A node that holds a shard serves it; a node that holds none answers with a typed redirect
  // naming the shard's replicas, which the client library follows at once: this client knows
  // only node 3, which holds no eu replica, yet its eu write lands (on an eu node).
  auto at_us = ClientOf(cluster, "users", 3);
  ASSERT_TRUE(
      cluster.WaitUntil([&] { return at_us->Put("us/alice", "1").ok(); }, absl::Seconds(15)));
  EXPECT_EQ(at_us->Get("us/alice")->value, "1");
  auto eu_elsewhere = at_us->Put("eu/bob", "2");
  ASSERT_TRUE(eu_elsewhere.ok()) << eu_elsewhere.status();
  EXPECT_EQ(at_us->Get("eu/bob")->value, "2");
  uint64_t eu_node = created->shards[0].replicas[0];
  EXPECT_EQ(ClientOf(cluster, "users", eu_node)->Get("eu/bob")->value, "2");
  // A region the keyspace does not have is refused, naming it; so is a key without a region.
  auto ap = at_us->Put("ap/carol", "3");
  EXPECT_EQ(ap.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(ap.status().message().find("'ap'"), std::string::npos) << ap.status();
  EXPECT_EQ(at_us->Put("noregion", "4").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kv
