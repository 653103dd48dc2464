// The multi-Raft store on real clusters: node records with labels, groups created and removed
// while the nodes serve traffic, idle groups going quiet and waking when a node dies, destroyed
// replicas staying destroyed across restarts. Every wait is bounded.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;

// Each node's own view of the groups it hosts.
std::map<uint64_t, GroupInfo> HostedBy(const LocalCluster& cluster, uint64_t node) {
  std::map<uint64_t, GroupInfo> out;
  auto admin = cluster.NewAdminFor(node);
  if (!admin) return out;
  auto groups = admin->ListGroups();
  if (!groups.ok()) return out;
  for (auto& g : *groups) {
    if (g.hosted_here) out[g.id] = g;
  }
  return out;
}

TEST(MultiRaft, NodesRecordTheirAddressesAndLabels) {
  LocalCluster cluster("mr-nodes", 3, {"--region=eu-west"});
  for (uint64_t id = 1; id <= 3; ++id) cluster.node(id).AddFlag(absl::StrCat("--zone=z", id));
  ASSERT_TRUE(cluster.StartAll());
  std::vector<NodeInfo> nodes;
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        auto r = cluster.NewAdminFor(2)->ListNodes();
        if (!r.ok() || r->size() != 3) return false;
        nodes = *r;
        return true;
      },
      absl::Seconds(15)));
  for (uint64_t id = 1; id <= 3; ++id) {
    const NodeInfo& n = nodes[id - 1];
    EXPECT_EQ(n.id, id);
    EXPECT_EQ(n.region, "eu-west");
    EXPECT_EQ(n.zone, absl::StrCat("z", id));
    EXPECT_EQ(n.state, "up");
    EXPECT_EQ(n.client_address, cluster.node(id).endpoint());
    EXPECT_EQ(n.peer_address, cluster.node(id).peer_endpoint());
  }
}

TEST(MultiRaft, GroupsAreCreatedQuiesceWakeOnNodeLossAndAreDestroyed) {
  LocalCluster cluster("mr-groups", 3);
  ASSERT_TRUE(cluster.StartAll());
  auto admin = cluster.NewAdmin();
  absl::StatusOr<std::vector<uint64_t>> ids = absl::UnavailableError("not yet");
  // Nodes register themselves once the metadata group has a leader.
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        ids = admin->CreateGroups(20, 3);
        return ids.ok();
      },
      absl::Seconds(15)))
      << ids.status();
  ASSERT_EQ(ids->size(), 20u);
  EXPECT_EQ(ids->front(), 2u) << "groups 0 and 1 exist from the start";

  // Every node hosts every group (3 replicas on 3 nodes), each group elects, then goes quiet.
  auto all_led_and_quiet = [&](const std::set<uint64_t>& nodes, bool require_quiet) {
    for (uint64_t node : nodes) {
      auto hosted = HostedBy(cluster, node);
      for (uint64_t id : *ids) {
        auto it = hosted.find(id);
        if (it == hosted.end() || it->second.leader_id == 0 ||
            !nodes.contains(it->second.leader_id)) {
          return false;
        }
        if (require_quiet && !it->second.quiesced) return false;
      }
    }
    return true;
  };
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        return all_led_and_quiet({1, 2, 3}, true);
      },
      absl::Seconds(30)));
  // The default groups keep serving while the new ones exist.
  auto client = cluster.NewClient();
  ASSERT_TRUE(client->Put("still", "works").ok());

  // Kill the node that leads the most new groups: their followers are quiet, so only node
  // liveness can tell them; every group must elect a leader among the survivors.
  std::map<uint64_t, int> leads;
  for (const auto& [id, g] : HostedBy(cluster, 1)) leads[g.leader_id]++;
  uint64_t victim = 1;
  for (const auto& [node, n] : leads) {
    if (n > leads[victim]) victim = node;
  }
  ASSERT_GT(leads[victim], 0);
  cluster.node(victim).Kill9();
  std::set<uint64_t> survivors;
  for (uint64_t n = 1; n <= 3; ++n) {
    if (n != victim) survivors.insert(n);
  }
  EXPECT_TRUE(
      cluster.WaitUntil([&] { return all_led_and_quiet(survivors, false); }, absl::Seconds(30)))
      << "groups led by the dead node must elect a new leader among the survivors";
  ASSERT_TRUE(cluster.node(victim).Start());
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        return all_led_and_quiet({1, 2, 3}, true);
      },
      absl::Seconds(30)));

  // Remove half of the groups: every replica of them is destroyed, and stays destroyed after a
  // restart (the replica record is a tombstone now).
  std::set<uint64_t> removed;
  for (size_t i = 0; i < ids->size(); i += 2) {
    ASSERT_TRUE(admin->RemoveGroup((*ids)[i]).ok());
    removed.insert((*ids)[i]);
  }
  auto gone_everywhere = [&] {
    for (uint64_t node = 1; node <= 3; ++node) {
      auto hosted = HostedBy(cluster, node);
      for (uint64_t id : removed) {
        if (hosted.contains(id)) return false;
      }
      for (uint64_t id : *ids) {
        if (!removed.contains(id) && !hosted.contains(id)) return false;
      }
    }
    return true;
  };
  ASSERT_TRUE(cluster.WaitUntil(gone_everywhere, absl::Seconds(15)));
  ASSERT_EQ(cluster.node(2).Stop(), 0);
  ASSERT_TRUE(cluster.node(2).Start());
  EXPECT_TRUE(cluster.WaitUntil(gone_everywhere, absl::Seconds(15)));
  EXPECT_EQ(cluster.node(2).ReadLog().find("FATAL"), std::string::npos);

  // Bad requests change nothing.
  EXPECT_TRUE(absl::IsInvalidArgument(admin->RemoveGroup(1)));
  EXPECT_TRUE(absl::IsNotFound(admin->RemoveGroup(999)));
  EXPECT_TRUE(absl::IsInvalidArgument(admin->CreateGroups(0, 3).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(admin->CreateGroups(1, 4).status()));
  auto got = client->Get("still");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "works");
}

TEST(MultiRaft, CreatingGroupsNeedsTheAdminRole) {
  LocalCluster cluster("mr-auth", 1);
  ASSERT_TRUE(cluster.StartAll());
  auto plain = AdminClient::Connect(cluster.endpoints(), absl::Seconds(2));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(absl::IsUnauthenticated((*plain)->CreateGroups(1, 1).status()));
  EXPECT_TRUE(absl::IsUnauthenticated((*plain)->RemoveGroup(2)));
  EXPECT_TRUE((*plain)->ListGroups().ok()) << "listing is open, like cluster status";
}

}  // namespace
}  // namespace kv
