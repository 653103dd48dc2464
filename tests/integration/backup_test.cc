// Backups on real clusters: `kvctl snapshot save` under a write load, `kvd --restore-from` into
// a fresh 3-node cluster, and damaged files refused without touching the data directory. kvctl
// runs as a script would and its JSON output is parsed. Every loop is bounded.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "storage/backup_archive.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::KvdProcess;
using kv::testing::LocalCluster;
using kv::testing::RunProgram;

struct Acked {
  std::string value;
  uint64_t version = 0;
};
// keyspace -> key -> what its acknowledged put returned
using AckedWrites = std::map<std::string, std::map<std::string, Acked>>;

std::unique_ptr<Client> ClientFor(LocalCluster& cluster, const std::string& keyspace) {
  ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
  o.keyspace = keyspace;
  o.timeout = absl::Seconds(10);
  return *Client::Connect(o);
}

// Creates a hash and a range keyspace once every node registered, and writes `n` keys to each
// of them and to the default keyspace.
void Populate(LocalCluster& cluster, int n, AckedWrites* acked) {
  auto admin = cluster.NewAdmin();
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto nodes = admin->ListNodes();
        return nodes.ok() && nodes->size() == cluster.size();
      },
      absl::Seconds(20)));
  KeyspaceSpec hash;
  hash.name = "users";
  hash.strategy = "hash";
  hash.shards = 4;
  ASSERT_TRUE(admin->CreateKeyspace(hash).ok());
  KeyspaceSpec range;
  range.name = "orders";
  range.split_points = {"m"};
  ASSERT_TRUE(admin->CreateKeyspace(range).ok());
  for (const std::string ks : {"", "users", "orders"}) {
    auto client = ClientFor(cluster, ks);
    for (int i = 0; i < n; ++i) {
      std::string key = absl::StrCat(i % 2 ? "a" : "z", "-key-", i);
      std::string value = absl::StrCat(ks, "-value-", i);
      auto put = client->Put(key, value);
      ASSERT_TRUE(put.ok()) << put.status();
      (*acked)[ks][key] = {value, put->version};
    }
  }
}

std::vector<std::string> KvctlAdmin(LocalCluster& cluster, std::vector<std::string> args) {
  std::vector<std::string> argv = {
      kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(1).endpoint(),
      "--admin-token-file=" + cluster.admin_token_file(), "-o", "json"};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

TEST(Backup, SavedUnderLoadAndRestoredIntoAFreshClusterWithEveryAcknowledgedWrite) {
  std::string files = kv::testing::MakeTempDir("backup-files");
  std::string file = files + "/cluster.kvsnap";
  AckedWrites acked;
  {
    LocalCluster source("backup-src", 3);
    ASSERT_TRUE(source.StartAll());
    Populate(source, 150, &acked);
    if (HasFatalFailure()) return;

    // Writes keep landing while the save runs; their keys never collide with the checked ones.
    std::atomic<bool> stop{false};
    std::atomic<int> during{0};
    std::thread writer([&] {
      auto client = ClientFor(source, "users");
      for (int i = 0; i < 5000 && !stop.load(); ++i) {
        if (client->Put(absl::StrCat("late-", i), "x").ok()) during.fetch_add(1);
      }
    });
    while (during.load() < 20) absl::SleepFor(absl::Milliseconds(10));
    auto saved = RunProgram(KvctlAdmin(source, {"snapshot", "save", file}), "", 120000);
    stop.store(true);
    writer.join();
    ASSERT_EQ(saved.exit_code, 0) << saved.err;
    auto summary = nlohmann::json::parse(saved.out);
    EXPECT_EQ(summary["shards"], 2 + 4 + 2) << saved.out;  // metadata, default, users, orders
    EXPECT_GE(summary["keys"].get<uint64_t>(), 450u);
    EXPECT_EQ(summary["sha256"], *storage::Sha256OfFile(file)) << "what sha256sum would print";
    EXPECT_NE(saved.err.find("snapshot: shard 0 saved (1/8 shards"), std::string::npos)
        << saved.err;
    EXPECT_GT(during.load(), 20) << "the cluster served writes during the save";

    auto status = RunProgram(KvctlAdmin(source, {"snapshot", "status", file}));
    ASSERT_EQ(status.exit_code, 0) << status.err;
    EXPECT_EQ(nlohmann::json::parse(status.out)["intact"], true);
  }

  LocalCluster restored("backup-dst", 3, {"--restore-from=" + file});
  ASSERT_TRUE(restored.StartAll());
  for (const auto& [ks, keys] : acked) {
    auto client = ClientFor(restored, ks);
    for (const auto& [key, want] : keys) {
      auto got = client->Get(key);
      ASSERT_TRUE(got.ok()) << ks << "/" << key << ": " << got.status();
      EXPECT_EQ(got->value, want.value) << ks << "/" << key;
      EXPECT_EQ(got->version, want.version) << ks << "/" << key;
    }
  }
  auto admin = restored.NewAdmin();
  auto keyspaces = admin->ListKeyspaces();
  ASSERT_TRUE(keyspaces.ok());
  ASSERT_EQ(keyspaces->size(), 3u);
  for (const auto& ks : *keyspaces) {
    for (const auto& shard : ks.shards) {
      EXPECT_EQ(shard.replicas.size(), 3u)
          << "every node of the new cluster hosts shard " << shard.shard_id;
    }
  }
  // The new cluster writes on: versions keep growing past every restored one.
  for (const auto& [ks, keys] : acked) {
    const auto& [key, before] = *keys.begin();
    auto put = ClientFor(restored, ks)->Put(key, "after");
    ASSERT_TRUE(put.ok()) << put.status();
    EXPECT_GT(put->version, before.version);
  }
  // The old cluster's node records are gone; the new nodes register themselves.
  EXPECT_TRUE(restored.WaitUntil(
      [&] {
        auto nodes = admin->ListNodes();
        return nodes.ok() && nodes->size() == 3 &&
               std::all_of(nodes->begin(), nodes->end(), [&](const NodeInfo& n) {
                 return n.client_address == restored.node(n.id).endpoint();
               });
      },
      absl::Seconds(20)));

  // A restart with the same command line keeps the data: the restore is not done twice.
  restored.node(2).Kill9();
  ASSERT_TRUE(restored.node(2).Start()) << restored.node(2).ReadLog();
  EXPECT_NE(restored.node(2).ReadLog().find("--restore-from is ignored"), std::string::npos);
  auto after = ClientFor(restored, "orders")->Get(acked["orders"].begin()->first);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->value, "after");
  std::filesystem::remove_all(files);
}

TEST(Backup, DamagedTruncatedOrForeignFilesAreRefusedAndChangeNothing) {
  LocalCluster cluster("backup-bad", 1);
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.NewClient()->Put("k", "v").ok());
  std::string good = cluster.root() + "/good.kvsnap";
  auto saved = RunProgram(KvctlAdmin(cluster, {"snapshot", "save", good}));
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 4096u);
  std::map<std::string, std::string> bad;
  bad["truncated"] = bytes.substr(0, bytes.size() / 2);
  bad["corrupted"] = bytes;
  bad["corrupted"][512 + 200] ^= 0x40;  // inside the first shard file
  bad["foreign"] = std::string(2048, 'x');
  bad["manifest-only"] = bytes.substr(bytes.size() - 4096);
  for (const auto& [name, content] : bad) {
    std::string path = cluster.root() + "/" + name + ".kvsnap";
    std::ofstream(path, std::ios::binary) << content;
    auto status = RunProgram(KvctlAdmin(cluster, {"snapshot", "status", path}));
    EXPECT_EQ(status.exit_code, 3) << name;  // kvctl: the operation failed
    EXPECT_EQ(nlohmann::json::parse(status.out)["error"], "DATA_LOSS") << name << status.out;

    std::string dir = cluster.root() + "/restore-" + name;
    KvdProcess node(1, dir);
    node.AddFlag("--restore-from=" + path);
    EXPECT_FALSE(node.Start(8000)) << name;
    std::string log = node.ReadLog();
    EXPECT_NE(log.find("refusing to start"), std::string::npos) << name << ": " << log;
    EXPECT_TRUE(log.find("is not an intact kvstore backup") != std::string::npos ||
                log.find("is truncated") != std::string::npos)
        << name << ": " << log;
    // Nothing restored: the directory starts as a new, empty node.
    KvdProcess fresh(1, dir);
    ASSERT_TRUE(fresh.Start()) << fresh.ReadLog();
    ClientOptions o;
    o.endpoints = {fresh.endpoint()};
    auto got = (*Client::Connect(o))->Get("k");
    EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << name;
    EXPECT_EQ(fresh.Stop(), 0);
  }
  // A directory that already holds replicas is never overwritten by a restore.
  cluster.node(1).AddFlag("--restore-from=" + good);
  ASSERT_EQ(cluster.node(1).Stop(), 0);
  EXPECT_FALSE(cluster.node(1).Start(8000));
  EXPECT_NE(cluster.node(1).ReadLog().find("already holds replicas"), std::string::npos);
}

}  // namespace
}  // namespace kv
