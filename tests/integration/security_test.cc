// Attacks from outside the cluster, one gRPC call at a time, against a live 3-node cluster set
// up as deploy/local-cluster.sh sets it up (peer token, admin token, sidecar). Each attack must
// fail with a clear status while every node stays up, stays SERVING, and reads back every known
// key unchanged. Some attacks are also tried with the peer token in hand (an insider's
// credential) to show that the checks behind authentication hold too.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/control.grpc.pb.h"
#include "kvstore/v1/internal.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "kvstore/v1/raft_service.grpc.pb.h"
#include "tests/support/http_get.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::LocalCluster;

constexpr int kKnownKeys = 10;

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(std::vector<std::string> flags) {
    cluster_ = std::make_unique<LocalCluster>("security", 3, std::move(flags));
    cluster_->EnableSidecar();
    ASSERT_TRUE(cluster_->StartAll());
    auto client = cluster_->NewClient();
    for (int i = 0; i < kKnownKeys; ++i) {
      ASSERT_TRUE(client->Put(absl::StrCat("known", i), absl::StrCat("value", i)).ok());
    }
    auto status = cluster_->NewAdmin()->Status();
    ASSERT_FALSE(status.empty());
    term_before_ = status.front().term;
    leader_ = cluster_->WaitForLeader();
    follower_ = leader_ % 3 + 1;
    grpc::ClientContext ctx;
    v1::ClusterStatusResponse r;
    auto admin_stub = v1::Admin::NewStub(
        grpc::CreateChannel(cluster_->node(1).endpoint(), grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(admin_stub->ClusterStatus(&ctx, {}, &r).ok());
    cluster_id_ = r.cluster_id();
  }

  std::unique_ptr<raftpb::RaftTransport::Stub> Transport(const std::string& endpoint) {
    return raftpb::RaftTransport::NewStub(
        grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  }
  static void AsAdmin(grpc::ClientContext* ctx) {
    Prepare(ctx, false);
    ctx->AddMetadata("authorization", std::string("Bearer ") + LocalCluster::kAdminToken);
  }
  static void Prepare(grpc::ClientContext* ctx, bool with_peer_token) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (with_peer_token) ctx->AddMetadata("kv-peer-token", LocalCluster::kPeerToken);
  }

  // One call to a node's peer transport, as an outsider (or, with the token, an insider).
  template <class Req, class Resp>
  grpc::Status Call(const std::string& endpoint,
                    grpc::Status (raftpb::RaftTransport::Stub::*method)(grpc::ClientContext*,
                                                                        const Req&, Resp*),
                    const Req& req, bool with_peer_token) {
    grpc::ClientContext ctx;
    Prepare(&ctx, with_peer_token);
    Resp resp;
    return (Transport(endpoint).get()->*method)(&ctx, req, &resp);
  }
  grpc::Status SendBatch(const std::string& endpoint, const raftpb::MessageBatch& batch,
                         bool with_peer_token) {
    return Call(endpoint, &raftpb::RaftTransport::Stub::Send, batch, with_peer_token);
  }
  grpc::Status Forward(const std::string& endpoint, const raftpb::ForwardRequest& req,
                       bool with_peer_token) {
    return Call(endpoint, &raftpb::RaftTransport::Stub::Forward, req, with_peer_token);
  }
  grpc::Status Chunk(const std::string& endpoint, const raftpb::SnapshotChunk& chunk,
                     bool with_peer_token) {
    return Call(endpoint, &raftpb::RaftTransport::Stub::SendSnapshot, chunk, with_peer_token);
  }

  // An append from `from` writing known0 = "forged" at the next index, one term ahead.
  raftpb::MessageBatch ForgedAppend(uint64_t from, uint64_t to, uint64_t term) {
    auto status = cluster_->NewAdmin()->Status();
    uint64_t last = 0;
    for (const auto& s : status) last = std::max(last, s.last_index);
    raftpb::MessageBatch batch;
    batch.set_cluster_id(cluster_id_);
    batch.set_from_node(from);
    auto* m = batch.add_messages();
    m->set_type(raftpb::MSG_APPEND);
    m->set_group_id(1);
    m->set_from(from);
    m->set_to(to);
    m->set_term(term);
    m->set_log_term(term_before_);
    m->set_index(last);
    m->set_commit(last + 1);
    internal::Command cmd;
    cmd.mutable_put()->set_key("known0");
    cmd.mutable_put()->set_value("forged");
    auto* e = m->add_entries();
    e->set_term(term);
    e->set_index(last + 1);
    e->set_data(cmd.SerializeAsString());
    return batch;
  }

  // Every node runs, reports SERVING, and serves every known key unchanged; the term did not
  // run away.
  void ExpectHealthyAndUnchanged() {
    for (uint64_t n = 1; n <= 3; ++n) {
      ASSERT_TRUE(cluster_->node(n).running()) << "node " << n << " died";
      ClientOptions o;
      o.endpoints = {cluster_->node(n).endpoint()};
      o.timeout = absl::Seconds(10);
      auto client = *Client::Connect(o);
      for (int i = 0; i < kKnownKeys; ++i) {
        auto got = client->Get(absl::StrCat("known", i));
        ASSERT_TRUE(got.ok()) << "node " << n << ": " << got.status();
        EXPECT_EQ(got->value, absl::StrCat("value", i)) << "node " << n;
      }
      auto control = v1::Control::NewStub(
          grpc::CreateChannel(cluster_->control_endpoint(n), grpc::InsecureChannelCredentials()));
      v1::HealthReport report;
      bool serving = cluster_->WaitUntil(
          [&] {
            grpc::ClientContext ctx;
            Prepare(&ctx, false);
            return control->Health(&ctx, {}, &report).ok() && report.status() == "SERVING";
          },
          absl::Seconds(10));
      EXPECT_TRUE(serving) << "node " << n << ": " << report.DebugString();
    }
    for (const auto& s : cluster_->NewAdmin()->Status()) {
      EXPECT_LT(s.term, term_before_ + 20) << "node " << s.node_id;
    }
  }

  std::unique_ptr<LocalCluster> cluster_;
  uint64_t cluster_id_ = 0;
  uint64_t term_before_ = 0;
  uint64_t leader_ = 0, follower_ = 0;
};

TEST_F(SecurityTest, ForgedRaftAppendIsRefusedEverywhere) {
  const auto& follower = cluster_->node(follower_);
  auto forged = ForgedAppend(99, follower_, term_before_ + 1);
  // The client port does not serve the peer transport at all.
  EXPECT_EQ(SendBatch(follower.endpoint(), forged, true).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // The peer port wants the peer token.
  EXPECT_EQ(SendBatch(follower.peer_endpoint(), forged, false).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // With the token, a sender that is not a member is still refused.
  EXPECT_EQ(SendBatch(follower.peer_endpoint(), forged, true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // A message whose sender differs from the batch's is dropped, not stepped.
  auto mismatched = ForgedAppend(99, follower_, term_before_ + 1);
  mismatched.set_from_node(leader_);
  EXPECT_TRUE(SendBatch(follower.peer_endpoint(), mismatched, true).ok());
  ExpectHealthyAndUnchanged();
  // Operators see it: the refusals are counted.
  std::string metrics = cluster_->metrics_endpoint(follower_);
  int metrics_port = std::stoi(metrics.substr(metrics.rfind(':') + 1));
  EXPECT_TRUE(cluster_->WaitUntil(
      [&] {
        std::string body = kv::testing::HttpGet(metrics_port, "/metrics");
        size_t at = body.find("event=\"peer_refused\"");
        if (at == std::string::npos) return false;
        size_t value = body.find("} ", at);
        return value != std::string::npos && std::stod(body.substr(value + 2)) >= 2;
      },
      absl::Seconds(5)));
  // Across a restart of the follower, too.
  EXPECT_EQ(cluster_->node(follower_).Stop(), 0);
  ASSERT_TRUE(cluster_->node(follower_).Start());
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, RefusedAndInvalidRequestsAreCountedWithTheirCodes) {
  auto kv = v1::KV::NewStub(
      grpc::CreateChannel(cluster_->node(1).endpoint(), grpc::InsecureChannelCredentials()));
  v1::PutRequest empty_key;  // invalid: no key
  empty_key.set_value("v");
  v1::PutResponse put;
  grpc::ClientContext invalid;
  EXPECT_EQ(kv->Put(&invalid, empty_key, &put).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetRequest get;
  get.set_key("known0");
  v1::GetResponse got;
  grpc::ClientContext forged;
  forged.AddMetadata("authorization", "Bearer not-a-token");
  EXPECT_EQ(kv->Get(&forged, get, &got).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  std::string metrics = cluster_->metrics_endpoint(1);
  int metrics_port = std::stoi(metrics.substr(metrics.rfind(':') + 1));
  std::string body = kv::testing::HttpGet(metrics_port, "/metrics");
  EXPECT_NE(body.find("kv_requests_total{code=\"INVALID_ARGUMENT\",method=\"Put\"} 1"),
            std::string::npos)
      << "an invalid request is counted with its code";
  EXPECT_NE(body.find("kv_requests_total{code=\"UNAUTHENTICATED\",method=\"Get\"} 1"),
            std::string::npos)
      << "so is one refused at admission";
  // What the alerts watch (deploy/prometheus/alerts.yml: KvDiskLow, KvNodeNotReady) is there.
  EXPECT_TRUE(cluster_->WaitUntil(
      [&] {
        std::string now = kv::testing::HttpGet(metrics_port, "/metrics");
        return now.find("kv_disk_bytes{stat=\"free\"}") != std::string::npos &&
               now.find("kv_disk_bytes{stat=\"total\"}") != std::string::npos &&
               now.find("kv_health{status=\"SERVING\"} 1") != std::string::npos;
      },
      absl::Seconds(5)));
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, SnapshotMessageWithoutDataIsRefusedNotFatal) {
  const auto& follower = cluster_->node(follower_);
  raftpb::MessageBatch batch;
  batch.set_cluster_id(cluster_id_);
  batch.set_from_node(leader_);  // claims to be the leader (a peer token cannot tell)
  auto* m = batch.add_messages();
  m->set_type(raftpb::MSG_SNAPSHOT);
  m->set_group_id(1);
  m->set_from(leader_);
  m->set_to(follower_);
  m->set_term(term_before_ + 5);
  m->mutable_snapshot()->set_index(1'000'000);
  m->mutable_snapshot()->set_term(term_before_ + 5);
  m->mutable_snapshot()->mutable_conf()->add_voters()->set_id(leader_);
  EXPECT_EQ(SendBatch(follower.peer_endpoint(), batch, false).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(SendBatch(follower.peer_endpoint(), batch, true).ok());  // dropped: no data
  // A streamed snapshot whose data does not decode is refused as it arrives, before Raft sees it.
  raftpb::SnapshotChunk chunk;
  chunk.set_cluster_id(cluster_id_);
  chunk.set_from_node(leader_);
  chunk.set_group_id(1);
  chunk.set_snapshot_id(7);
  chunk.set_data("definitely not a snapshot");
  chunk.set_last(true);
  *chunk.mutable_message() = *m;
  EXPECT_EQ(Chunk(follower.peer_endpoint(), chunk, true).error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(cluster_->WaitUntil(
      [&] { return follower.ReadLog().find("refused a snapshot from node") != std::string::npos; },
      absl::Seconds(5)));
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, HugeTermFromOutsideIsRefused) {
  const auto& follower = cluster_->node(follower_);
  raftpb::MessageBatch batch;
  batch.set_cluster_id(cluster_id_);
  batch.set_from_node(99);
  auto* m = batch.add_messages();
  m->set_type(raftpb::MSG_HEARTBEAT);
  m->set_group_id(1);
  m->set_from(99);
  m->set_to(follower_);
  m->set_term(uint64_t{1} << 63);
  EXPECT_EQ(SendBatch(follower.peer_endpoint(), batch, false).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SendBatch(follower.peer_endpoint(), batch, true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Another cluster's traffic is refused whoever sends it.
  batch.set_cluster_id(cluster_id_ + 1);
  EXPECT_EQ(SendBatch(follower.peer_endpoint(), batch, true).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, MembershipChangesNeedTheAdminRoleAndACaughtUpLearner) {
  auto anonymous = *AdminClient::Connect(cluster_->endpoints(), absl::Seconds(5));
  for (uint64_t id : {7, 8, 9}) {
    auto added = anonymous->AddLearner(id, absl::StrCat("127.0.0.1:", 29990 + id));
    EXPECT_TRUE(absl::IsUnauthenticated(added.status()) || absl::IsPermissionDenied(added.status()))
        << added.status();
    EXPECT_FALSE(anonymous->Promote(id).ok());
  }
  EXPECT_FALSE(anonymous->TransferLeader(0).ok());
  EXPECT_FALSE(anonymous->Remove(follower_).ok());

  auto admin = cluster_->NewAdmin();
  EXPECT_TRUE(absl::IsInvalidArgument(admin->AddLearner(0, "127.0.0.1:29999").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(admin->AddLearner(7, "not an address").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(admin->AddLearner(7, "127.0.0.1:99999").status()));
  auto taken_address = admin->AddLearner(7, cluster_->node(follower_).peer_endpoint());
  EXPECT_TRUE(absl::IsAlreadyExists(taken_address.status())) << taken_address.status();
  auto taken_id = admin->AddLearner(follower_, "127.0.0.1:29998");
  EXPECT_TRUE(absl::IsAlreadyExists(taken_id.status())) << taken_id.status();
  // A learner that never started cannot be promoted into a vote it would never cast.
  ASSERT_TRUE(admin->AddLearner(7, "127.0.0.1:29997").ok());
  auto promoted = admin->Promote(7);
  EXPECT_TRUE(absl::IsFailedPrecondition(promoted.status())) << promoted.status();
  ASSERT_TRUE(admin->Remove(7).ok());
  size_t voters = 0;
  for (const auto& s : admin->Status()) {
    if (s.node_id != leader_) continue;
    for (const auto& member : s.members) voters += member.voter ? 1 : 0;
  }
  EXPECT_EQ(voters, 3u);
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, ForwardedWritesAreValidatedAndCarryNoSystemCommands) {
  const auto& leader = cluster_->node(leader_);
  raftpb::ForwardRequest req;
  req.set_cluster_id(cluster_id_);
  req.set_from_node(follower_);
  req.set_group_id(1);
  req.set_write_consistency(v1::WRITE_MAJORITY);
  internal::Command engage;
  v1::KillSwitchState halt;
  halt.set_mode(v1::KILL_SWITCH_HALT);
  halt.set_reason("forged");
  engage.mutable_system_put()->set_key("killswitch");
  engage.mutable_system_put()->set_value(halt.SerializeAsString());
  req.set_command(engage.SerializeAsString());
  EXPECT_EQ(Forward(leader.endpoint(), req, true).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(Forward(leader.peer_endpoint(), req, false).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Forward(leader.peer_endpoint(), req, true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // not in a data group
  req.set_group_id(0);
  req.set_from_node(99);
  EXPECT_EQ(Forward(leader.peer_endpoint(), req, true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // not from a member

  req.set_group_id(1);
  req.set_from_node(follower_);
  for (auto [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"", "v"}, {std::string(100'000, 'k'), "v"}, {"k", std::string(32 << 20, 'v')}}) {
    internal::Command put;
    put.mutable_put()->set_key(key);
    put.mutable_put()->set_value(value);
    req.set_command(put.SerializeAsString());
    EXPECT_EQ(Forward(leader.peer_endpoint(), req, true).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << key.size() << " " << value.size();
  }
  req.set_command("\xff\xff\xff garbage");
  EXPECT_EQ(Forward(leader.peer_endpoint(), req, true).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  auto control = v1::Control::NewStub(
      grpc::CreateChannel(cluster_->control_endpoint(leader_), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  Prepare(&ctx, false);
  v1::KillSwitchState state;
  ASSERT_TRUE(control->GetKillSwitch(&ctx, {}, &state).ok());
  EXPECT_EQ(state.mode(), v1::KILL_SWITCH_OFF);
  EXPECT_EQ(state.history_size(), 0);
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, SnapshotStreamsAreBoundedAndExpire) {
  cluster_.reset();
  Start({"--max-snapshot-bytes=4194304", "--snapshot-idle-seconds=1"});
  const auto& follower = cluster_->node(follower_);
  raftpb::SnapshotChunk chunk;
  chunk.set_cluster_id(cluster_id_);
  chunk.set_group_id(1);
  chunk.set_snapshot_id(1);
  chunk.set_from_node(99);
  chunk.set_data(std::string(1 << 20, 's'));
  EXPECT_EQ(Chunk(follower.peer_endpoint(), chunk, false).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Chunk(follower.peer_endpoint(), chunk, true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // made-up sender: no buffer at all
  chunk.set_from_node(leader_);
  chunk.set_data(std::string(40 << 20, 's'));
  EXPECT_EQ(Chunk(follower.peer_endpoint(), chunk, true).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // oversized chunk
  // A stream larger than --max-snapshot-bytes is cut off. Its first record claims a 20 MiB
  // value, so every chunk is well-formed so far.
  const std::string head(
      "c\0\0\0\x05"
      "clock\x01\x40\0\0",
      14);
  grpc::StatusCode last = grpc::StatusCode::OK;
  for (int i = 0; i < 6 && last == grpc::StatusCode::OK; ++i) {
    chunk.set_offset(static_cast<uint64_t>(i) << 20);
    chunk.set_data(i == 0 ? head + std::string((1 << 20) - head.size(), 's')
                          : std::string(1 << 20, 's'));
    last = Chunk(follower.peer_endpoint(), chunk, true).error_code();
  }
  EXPECT_EQ(last, grpc::StatusCode::RESOURCE_EXHAUSTED);
  // An abandoned stream is dropped once idle: its next chunk finds nothing to continue.
  chunk.set_snapshot_id(2);
  chunk.set_offset(0);
  chunk.set_data(head + std::string((1 << 20) - head.size(), 's'));
  ASSERT_TRUE(Chunk(follower.peer_endpoint(), chunk, true).ok());
  absl::SleepFor(absl::Milliseconds(1500));
  chunk.set_offset(1 << 20);
  chunk.set_data(std::string(1 << 20, 's'));
  EXPECT_EQ(Chunk(follower.peer_endpoint(), chunk, true).error_code(), grpc::StatusCode::ABORTED);
  ExpectHealthyAndUnchanged();
}

TEST_F(SecurityTest, SelfDeclaredIdentitiesShareTheirHostsBucketAndForgeNoAuditActor) {
  auto control = v1::Control::NewStub(
      grpc::CreateChannel(cluster_->control_endpoint(leader_), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    AsAdmin(&ctx);
    v1::LimitsConfig limits, now;
    limits.set_per_client_rps(1);
    limits.set_per_client_burst(5);
    ASSERT_TRUE(control->SetLimits(&ctx, limits, &now).ok());
  }
  auto kv = v1::KV::NewStub(
      grpc::CreateChannel(cluster_->node(leader_).endpoint(), grpc::InsecureChannelCredentials()));
  int admitted = 0;
  for (int identity = 0; identity < 10; ++identity) {
    for (int i = 0; i < 5; ++i) {
      grpc::ClientContext ctx;
      Prepare(&ctx, false);
      ctx.AddMetadata("kv-client-identity", absl::StrCat("client-", identity));
      v1::GetRequest req;
      req.set_key("known1");
      v1::GetResponse resp;
      if (kv->Get(&ctx, req, &resp).ok()) ++admitted;
    }
  }
  // One bucket for the host (burst 5, plus a token or two refilled meanwhile), not ten.
  EXPECT_LE(admitted, 10);
  EXPECT_GE(admitted, 5);

  grpc::ClientContext ctx;
  AsAdmin(&ctx);
  ctx.AddMetadata("kv-client-identity", "mallory");
  v1::EngageKillSwitchRequest engage;
  engage.set_mode(v1::KILL_SWITCH_READ_ONLY);
  engage.set_reason("audit check");
  v1::KillSwitchState state;
  ASSERT_TRUE(control->EngageKillSwitch(&ctx, engage, &state).ok());
  ASSERT_GT(state.history_size(), 0);
  EXPECT_EQ(state.history(state.history_size() - 1).actor(), "admin");
  // Free text and numbers are bounded.
  grpc::ClientContext long_reason;
  AsAdmin(&long_reason);
  engage.set_reason(std::string(100'000, 'r'));
  EXPECT_EQ(control->EngageKillSwitch(&long_reason, engage, &state).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(), -1.0}) {
    grpc::ClientContext c;
    AsAdmin(&c);
    v1::LimitsConfig limits, now;
    limits.set_per_client_rps(bad);
    EXPECT_EQ(control->SetLimits(&c, limits, &now).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad;
  }
  // An unknown bearer token is refused on the data path too, not ignored.
  grpc::ClientContext wrong;
  Prepare(&wrong, false);
  wrong.AddMetadata("authorization", "Bearer not-a-token");
  v1::GetRequest req;
  req.set_key("known1");
  v1::GetResponse resp;
  EXPECT_EQ(kv->Get(&wrong, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(SecurityTokensTest, ClientTokensNameTheirOwnBuckets) {
  std::string dir = kv::testing::MakeTempDir("client-tokens");
  std::string tokens = dir + "/tokens";
  if (FILE* f = std::fopen(tokens.c_str(), "w")) {
    std::fputs("alice alice-token-0123456789\nbob bob-token-0123456789ab\n", f);
    std::fclose(f);
  }
  LocalCluster cluster("client-tokens", 1, {"--client-tokens-file=" + tokens});
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  auto control = v1::Control::NewStub(
      grpc::CreateChannel(cluster.control_endpoint(1), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + LocalCluster::kAdminToken);
    v1::LimitsConfig limits, now;
    limits.set_per_client_rps(0.01);
    limits.set_per_client_burst(3);
    ASSERT_TRUE(control->SetLimits(&ctx, limits, &now).ok());
  }
  auto admitted = [&](const std::string& token) {
    ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
    o.auth_token = token;
    o.retry.max_attempts = 1;
    auto client = *Client::Connect(o);
    int ok = 0;
    for (int i = 0; i < 6; ++i) ok += absl::IsResourceExhausted(client->Get("k").status()) ? 0 : 1;
    return ok;
  };
  // Each token is its own caller with its own bucket of 3; a wrong token is not a caller at all.
  EXPECT_EQ(admitted("alice-token-0123456789"), 3);
  EXPECT_EQ(admitted("bob-token-0123456789ab"), 3);
  ClientOptions o = cluster.ClientOptionsFor(cluster.endpoints());
  o.auth_token = "mallory-token-000000000";
  EXPECT_TRUE(absl::IsUnauthenticated((*Client::Connect(o))->Get("k").status()));
  std::filesystem::remove_all(dir);
}

TEST(SecurityLogTest, LogIsCompactedByBytes) {
  LocalCluster cluster("compact-bytes", 1, {"--log-compact-bytes=1048576"});
  ASSERT_TRUE(cluster.StartAll());
  auto client = cluster.NewClient(absl::Seconds(20));
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(client->Put(absl::StrCat("big", i), std::string(512 << 10, 'b')).ok());
  }
  // 6 MiB written: entry-count compaction (20 000 entries) would keep all of it; the byte bound
  // keeps at most about 1 MiB of log behind the applied index.
  bool compacted = cluster.WaitUntil(
      [&] {
        auto s = cluster.NewAdmin()->Status();
        return !s.empty() && s.front().first_index > 8;
      },
      absl::Seconds(10));
  EXPECT_TRUE(compacted);
  auto got = client->Get("big11");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value.size(), size_t{512 << 10});
}

}  // namespace
}  // namespace kv
