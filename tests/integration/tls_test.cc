// TLS on real clusters, with certificates made by deploy/make-certs.sh (openssl): what is
// refused (another CA, an expired certificate, a peer certificate naming another node, plain
// text against a TLS port, a missing client certificate where one is required), who a
// certificate makes the caller, and rotation of a node's certificate without a restart.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kvstore/v1/raft_service.grpc.pb.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;
using kv::testing::RunProgram;

// Certificates of another CA (and, with days < 0, of the cluster's CA but long expired).
std::string MakeCerts(const std::string& dir, const std::string& days = "30",
                      const std::string& copy_ca_from = "") {
  std::filesystem::create_directories(dir);
  if (!copy_ca_from.empty()) {
    for (const char* f : {"ca.pem", "ca.key"}) {
      std::filesystem::copy_file(copy_ca_from + "/" + f, dir + "/" + f);
    }
  }
  auto r = RunProgram(
      {"/bin/bash", std::string(KV_SOURCE_DIR) + "/deploy/make-certs.sh", dir, "3", days});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

TlsOptions Tls(const std::string& dir, const std::string& who, const std::string& ca_dir = "") {
  TlsOptions t;
  t.ca_file = (ca_dir.empty() ? dir : ca_dir) + "/ca.pem";
  if (!who.empty()) {
    t.cert_file = dir + "/" + who + ".pem";
    t.key_file = dir + "/" + who + ".key";
  }
  return t;
}

absl::Status PutWith(const LocalCluster& cluster, uint64_t node, const TlsOptions& tls) {
  ClientOptions o;
  o.endpoints = {cluster.endpoints()[node - 1]};
  o.timeout = absl::Seconds(3);
  o.retry.max_attempts = 2;
  o.tls = tls;
  auto client = Client::Connect(o);
  if (!client.ok()) return client.status();
  auto put = (*client)->Put("tls-probe", "v");
  return put.ok() ? absl::OkStatus() : put.status();
}

TEST(TlsTest, RefusesAnotherCaExpiredCertificatesAndPlainText) {
  LocalCluster cluster("tls-refuse", 3, {"--client-cert-required"});
  cluster.EnableTls();
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  std::string certs = cluster.certs_dir();
  EXPECT_TRUE(PutWith(cluster, 1, Tls(certs, "client")).ok());

  std::string other = MakeCerts(cluster.root() + "/other-ca");
  std::string expired = MakeCerts(cluster.root() + "/expired", "-1", certs);
  // A client that trusts another CA does not accept the node's certificate.
  EXPECT_TRUE(absl::IsUnavailable(PutWith(cluster, 1, Tls(certs, "client", other))));
  // A client certificate of another CA, an expired one, or none at all: refused by the node.
  EXPECT_TRUE(absl::IsUnavailable(PutWith(cluster, 1, Tls(other, "client", certs))));
  EXPECT_TRUE(absl::IsUnavailable(PutWith(cluster, 1, Tls(expired, "client", certs))));
  EXPECT_TRUE(absl::IsUnavailable(PutWith(cluster, 1, Tls(certs, ""))));
  // Plain text against a TLS port.
  EXPECT_TRUE(absl::IsUnavailable(PutWith(cluster, 1, TlsOptions{})));
  // The control port is TLS too.
  auto r =
      RunProgram({kv::testing::KvctlBinary(), "--control-endpoints=" + cluster.control_endpoint(1),
                  "--timeout=2s", "health"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  r = RunProgram({kv::testing::KvctlBinary(), "--control-endpoints=" + cluster.control_endpoint(1),
                  "--cacert=" + certs + "/ca.pem", "--cert=" + certs + "/client.pem",
                  "--key=" + certs + "/client.key", "--timeout=5s", "health"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // Still serving after all that.
  EXPECT_TRUE(cluster.NewClient()->Put("after", "ok").ok());
}

TEST(TlsTest, ACertificateNamesTheCallerAndOnlyAdminMayChangeMembership) {
  LocalCluster cluster("tls-roles", 3);
  cluster.EnableTls();
  ASSERT_TRUE(cluster.StartAll());
  std::string certs = cluster.certs_dir();
  AdminOptions as_client;
  as_client.endpoints = cluster.endpoints();
  as_client.tls = Tls(certs, "client");
  auto client_admin = *AdminClient::Connect(as_client);
  EXPECT_FALSE(client_admin->Status().empty());  // status is open to every caller
  auto refused = client_admin->AddLearner(7, "127.0.0.1:29997");
  EXPECT_TRUE(absl::IsUnauthenticated(refused.status())) << refused.status();
  AdminOptions as_admin = as_client;
  as_admin.tls = Tls(certs, "admin");
  auto admin = *AdminClient::Connect(as_admin);
  ASSERT_TRUE(admin->AddLearner(7, "127.0.0.1:29997").ok());
  ASSERT_TRUE(admin->Remove(7).ok());
}

TEST(TlsTest, APeerWithAnotherNodesCertificateIsShutOut) {
  LocalCluster cluster("tls-impostor", 3);
  cluster.EnableTls();
  // Node 3 holds node 2's certificate.
  std::string certs = cluster.certs_dir();
  for (const char* ext : {".pem", ".key"}) {
    std::filesystem::copy_file(certs + "/node-2" + ext, certs + "/node-3" + ext,
                               std::filesystem::copy_options::overwrite_existing);
  }
  ASSERT_TRUE(cluster.StartAll());  // nodes 1 and 2 are a majority
  auto client = cluster.NewClient();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->Put(absl::StrCat("k", i), "v").ok());
  uint64_t leader = cluster.WaitForLeader();
  EXPECT_NE(leader, 3u);
  // Node 3 never receives the log: its claims as node 3 are refused, and nobody accepts it as
  // the node 3 they dial (node 3 hears so and logs it).
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        return cluster.node(3).ReadLog().find("refuses this node's Raft traffic") !=
               std::string::npos;
      },
      absl::Seconds(10)));
  for (const auto& s : cluster.NewAdmin()->Status()) {
    if (s.node_id == 3) {
      EXPECT_LT(s.applied_index, 20u);
    }
  }
  // Directly: node 2's certificate claiming to be node 3 is refused on node 1's peer port.
  grpc::SslCredentialsOptions ssl;
  auto read = [](const std::string& path) {
    auto r = RunProgram({"/bin/cat", path});
    return r.out;
  };
  ssl.pem_root_certs = read(certs + "/ca.pem");
  ssl.pem_cert_chain = read(certs + "/node-2.pem");
  ssl.pem_private_key = read(certs + "/node-2.key");
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("node-1");
  auto stub = raftpb::RaftTransport::NewStub(
      grpc::CreateCustomChannel(cluster.node(1).peer_endpoint(), grpc::SslCredentials(ssl), args));
  raftpb::MessageBatch batch;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  batch.set_from_node(3);
  raftpb::BatchAck ack;
  auto s = stub->Send(&ctx, batch, &ack);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("does not name node-3"), std::string::npos) << s.error_message();
}

TEST(TlsTest, ARotatedCertificateTakesEffectWithoutARestart) {
  LocalCluster cluster("tls-rotate", 1);
  cluster.EnableTls();
  ASSERT_TRUE(cluster.StartAll());
  std::string certs = cluster.certs_dir();
  std::string next = MakeCerts(cluster.root() + "/next-ca");
  EXPECT_TRUE(PutWith(cluster, 1, Tls(certs, "admin")).ok());
  EXPECT_FALSE(PutWith(cluster, 1, Tls(certs, "admin", next)).ok());
  // Rotate node 1's certificate to one of the next CA: new files renamed over the old ones.
  for (const char* ext : {".key", ".pem"}) {
    std::string tmp = certs + "/node-1" + ext + ".new";
    std::filesystem::copy_file(next + "/node-1" + ext, tmp);
    std::filesystem::rename(tmp, certs + "/node-1" + ext);
  }
  bool rotated = cluster.WaitUntil(
      [&] { return PutWith(cluster, 1, Tls(certs, "admin", next)).ok(); }, absl::Seconds(20));
  EXPECT_TRUE(rotated);
}

}  // namespace
}  // namespace kv
