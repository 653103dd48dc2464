#include "tests/support/local_cluster.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kv::testing {

LocalCluster::LocalCluster(const std::string& name, int n, std::vector<std::string> flags)
    : root_(MakeTempDir(name)), flags_(std::move(flags)) {
  for (int i = 1; i <= n; ++i) {
    nodes_.push_back(
        std::make_unique<KvdProcess>(static_cast<uint64_t>(i), absl::StrCat(root_, "/node", i)));
  }
  for (int i = 1; i <= n; ++i) {
    absl::StrAppend(&peers_, i == 1 ? "" : ",", i, "=", nodes_[i - 1]->peer_endpoint());
  }
  // Membership changes and leader transfer need the admin role: every test cluster has a token.
  token_file_ = root_ + "/admin-token";
  if (FILE* f = std::fopen(token_file_.c_str(), "w")) {
    std::fputs(kAdminToken, f);
    std::fclose(f);
  }
  flags_.push_back("--admin-token-file=" + token_file_);
  // Peers prove they belong to the cluster, as deploy/local-cluster.sh sets it up.
  peer_token_file_ = root_ + "/peer-token";
  if (FILE* f = std::fopen(peer_token_file_.c_str(), "w")) {
    std::fputs(kPeerToken, f);
    std::fclose(f);
  }
  flags_.push_back("--peer-token-file=" + peer_token_file_);
  for (auto& node : nodes_) {
    node->AddFlag("--peers=" + peers_);
    for (const auto& f : flags_) node->AddFlag(f);
    node->set_wait_for_leader(false);
  }
  if (const char* env = std::getenv("KV_TEST_TLS"); env && std::string(env) == "1") EnableTls();
}

void LocalCluster::EnableTls() {
  if (tls_) return;
  tls_ = true;
  auto made = RunProgram(
      {"/bin/bash", std::string(KV_SOURCE_DIR) + "/deploy/make-certs.sh", certs_dir(), "5"});
  EXPECT_EQ(made.exit_code, 0) << made.err;
  client_tls_.ca_file = certs_dir() + "/ca.pem";
  client_tls_.cert_file = certs_dir() + "/admin.pem";
  client_tls_.key_file = certs_dir() + "/admin.key";
  for (auto& node : nodes_) AddTlsFlags(*node);
}

void LocalCluster::AddTlsFlags(KvdProcess& node) const {
  std::string c = certs_dir() + "/node-" + std::to_string(node.node_id());
  for (const char* prefix : {"--tls", "--peer-tls"}) {
    node.AddFlag(absl::StrCat(prefix, "-cert-file=", c, ".pem"));
    node.AddFlag(absl::StrCat(prefix, "-key-file=", c, ".key"));
    node.AddFlag(absl::StrCat(prefix, "-ca-file=", certs_dir(), "/ca.pem"));
  }
}

ClientOptions LocalCluster::ClientOptionsFor(std::vector<std::string> endpoints) const {
  ClientOptions o;
  o.endpoints = std::move(endpoints);
  o.tls = client_tls_;
  return o;
}

LocalCluster::~LocalCluster() {
  if (::testing::Test::HasFailure()) DumpDiagnostics();
  nodes_.clear();  // SIGKILLs what still runs
  std::filesystem::remove_all(root_);
}

void LocalCluster::DumpDiagnostics() const {
  // What each node says about itself, then the end of its log: enough to tell a crash, a port
  // clash or an election that never settles apart when only CI's output is left.
  auto admin = NewAdmin();
  for (const auto& s : admin->Status()) {
    std::fprintf(stderr, "[cluster %s] node %lu at %s: role=%s term=%lu leader=%lu commit=%lu\n",
                 root_.c_str(), static_cast<unsigned long>(s.node_id), s.endpoint.c_str(),
                 s.role.c_str(), static_cast<unsigned long>(s.term),
                 static_cast<unsigned long>(s.leader_id),
                 static_cast<unsigned long>(s.commit_index));
  }
  for (const auto& node : nodes_) {
    std::string log = node->ReadLog();
    size_t from = 0;
    int lines = 0;
    for (size_t i = log.size(); i > 0; --i) {
      if (log[i - 1] == '\n' && ++lines > 40) {
        from = i;
        break;
      }
    }
    std::fprintf(stderr, "[cluster %s] node %lu (pid %d) log tail:\n%s\n", root_.c_str(),
                 static_cast<unsigned long>(node->node_id()), node->pid(),
                 log.substr(from).c_str());
  }
}

void LocalCluster::EnableSidecar() {
  for (auto& node : nodes_) {
    control_.push_back(absl::StrCat("127.0.0.1:", PickFreePort()));
    metrics_.push_back(absl::StrCat("127.0.0.1:", PickFreePort()));
    node->AddFlag("--control-listen=" + control_.back());
    node->AddFlag("--metrics-listen=" + metrics_.back());
  }
}

std::map<uint64_t, std::pair<int, int>> LocalCluster::UseSeparateUids() {
  std::map<uint64_t, std::pair<int, int>> out;
  // The cluster folder must be enterable by the node uids.
  std::filesystem::permissions(root_, std::filesystem::perms::all);
  int base = 41000 + (getpid() % 1000) * 10;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    int uid = base + static_cast<int>(i) + 1;
    nodes_[i]->set_uid(uid);
    out[i + 1] = {uid, nodes_[i]->peer_port()};
  }
  return out;
}

bool LocalCluster::StartAll() {
  for (auto& node : nodes_) {
    if (!node->Start()) return false;
  }
  return WaitForLeader() != 0;
}

std::unique_ptr<AdminClient> LocalCluster::StartRegistered(absl::Duration wait) {
  if (!StartAll()) return nullptr;
  auto admin = NewAdmin();
  bool registered = WaitUntil(
      [&] {
        auto nodes = admin->ListNodes();
        return nodes.ok() && nodes->size() == size();
      },
      wait);
  return registered ? std::move(admin) : nullptr;
}

std::vector<std::string> LocalCluster::endpoints() const {
  std::vector<std::string> out;
  for (const auto& node : nodes_) out.push_back(node->endpoint());
  return out;
}

KvdProcess& LocalCluster::AddJoiningNode(uint64_t id) {
  nodes_.push_back(std::make_unique<KvdProcess>(id, absl::StrCat(root_, "/node", id)));
  auto& node = *nodes_.back();
  node.AddFlag("--join");
  node.AddFlag("--peers=" + peers_);
  AddClusterFlags(node);
  node.set_wait_for_leader(false);
  return node;
}

void LocalCluster::AddClusterFlags(KvdProcess& node) const {
  for (const auto& f : flags_) node.AddFlag(f);
  if (tls_) AddTlsFlags(node);
}

std::unique_ptr<Client> LocalCluster::NewClient(absl::Duration timeout) const {
  ClientOptions o;
  o.endpoints = endpoints();
  o.timeout = timeout;
  o.tls = client_tls_;
  return *Client::Connect(o);
}

std::unique_ptr<AdminClient> LocalCluster::NewAdmin() const {
  AdminOptions o;
  o.endpoints = endpoints();
  o.timeout = absl::Seconds(2);
  o.admin_token = kAdminToken;
  o.tls = client_tls_;
  return *AdminClient::Connect(o);
}

std::unique_ptr<AdminClient> LocalCluster::NewAdminFor(uint64_t id) const {
  AdminOptions o;
  o.endpoints = {nodes_[id - 1]->endpoint()};
  o.timeout = absl::Seconds(2);
  o.admin_token = kAdminToken;
  o.tls = client_tls_;
  auto admin = AdminClient::Connect(o);
  EXPECT_TRUE(admin.ok()) << admin.status();
  return admin.ok() ? *std::move(admin) : nullptr;
}

uint64_t LocalCluster::WaitForLeader(absl::Duration wait, uint64_t not_this) {
  auto admin = NewAdmin();
  absl::Time deadline = absl::Now() + wait;
  while (absl::Now() < deadline) {
    // The node that says it leads in the highest term (a deposed leader may not know yet).
    uint64_t leader = 0, term = 0;
    for (const auto& s : admin->Status()) {
      if (s.role == "leader" && s.node_id != not_this && s.term >= term) {
        leader = s.node_id;
        term = s.term;
      }
    }
    if (leader != 0) return leader;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return 0;
}

bool LocalCluster::WaitUntil(const std::function<bool()>& condition, absl::Duration wait) {
  absl::Time deadline = absl::Now() + wait;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return condition();
}

}  // namespace kv::testing
