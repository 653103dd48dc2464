// Test support: a cluster of real kvd processes on loopback, with helpers to find the leader and
// wait for conditions. Every wait is bounded.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kv/admin.h"
#include "kv/client.h"
#include "tests/support/kvd_process.h"

namespace kv::testing {

class LocalCluster {
 public:
  // Starts `n` voters (ids 1..n). Extra flags go to every node.
  LocalCluster(const std::string& name, int n, std::vector<std::string> flags = {});
  ~LocalCluster();

  bool StartAll();
  // StartAll, then waits until every node registered itself in the metadata (placement needs
  // their records): an admin client, or nullptr when that did not happen in `wait`.
  std::unique_ptr<AdminClient> StartRegistered(absl::Duration wait = absl::Seconds(20));
  KvdProcess& node(uint64_t id) { return *nodes_[id - 1]; }
  size_t size() const { return nodes_.size(); }
  std::string peers_flag() const { return peers_; }
  std::vector<std::string> endpoints() const;
  const std::string& root() const { return root_; }
  // Gives a process made by the test the flags every node of this cluster has (tokens, TLS,
  // the constructor's flags); --peers is the caller's.
  void AddClusterFlags(KvdProcess& node) const;
  // Adds a process for node `id` (not yet started, not yet a member), started with --join.
  KvdProcess& AddJoiningNode(uint64_t id);

  // With sidecar: each node also gets --control-listen and --metrics-listen on free ports.
  // Every node has the admin token "test-admin-token" (file admin_token_file()).
  void EnableSidecar();
  std::string control_endpoint(uint64_t id) const { return control_[id - 1]; }
  std::string metrics_endpoint(uint64_t id) const { return metrics_[id - 1]; }
  static constexpr const char* kAdminToken = "test-admin-token";
  const std::string& admin_token_file() const { return token_file_; }
  // The peer token every node is started with (--peer-token-file).
  static constexpr const char* kPeerToken = "test-peer-token-0123456789";
  // TLS on the client and control listeners and mTLS between peers, with certificates that
  // deploy/make-certs.sh makes for nodes 1..5 under root()/certs. Call before StartAll. Every
  // cluster of a test process runs like this when the environment has KV_TEST_TLS=1.
  void EnableTls();
  std::string certs_dir() const { return root_ + "/certs"; }
  // Options for a client of the given endpoints, TLS included when on.
  ClientOptions ClientOptionsFor(std::vector<std::string> endpoints) const;
  // Runs each node as its own uid (for network partitions); returns node id -> (uid, port).
  std::map<uint64_t, std::pair<int, int>> UseSeparateUids();

  std::unique_ptr<Client> NewClient(absl::Duration timeout = absl::Seconds(10)) const;
  std::unique_ptr<AdminClient> NewAdmin() const;
  // An admin client that talks to node `id` only (its own view of the topology).
  std::unique_ptr<AdminClient> NewAdminFor(uint64_t id) const;
  // Leader id agreed on by the running nodes that answer, 0 if none within `wait`.
  uint64_t WaitForLeader(absl::Duration wait = absl::Seconds(15), uint64_t not_this = 0);
  bool WaitUntil(const std::function<bool()>& condition, absl::Duration wait);

 private:
  // Printed by the destructor when the test failed.
  void DumpDiagnostics() const;

  std::string root_;
  std::string peers_;
  std::vector<std::string> flags_;
  std::vector<std::unique_ptr<KvdProcess>> nodes_;
  std::vector<std::string> control_, metrics_;
  void AddTlsFlags(KvdProcess& node) const;

  std::string token_file_, peer_token_file_;
  bool tls_ = false;
  TlsOptions client_tls_;
};

}  // namespace kv::testing
