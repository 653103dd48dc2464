// The control sidecar on real clusters: kill switch, admin token, rate limits, breakers,
// health (standard grpc.health.v1 and the detailed report), and metrics scraped by a real
// Prometheus server. Every wait is bounded.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvstore/v1/control.grpc.pb.h"
#include "tests/support/http_get.h"
#include "tests/support/local_cluster.h"

namespace kv {
namespace {

using kv::testing::HttpGet;
using kv::testing::LocalCluster;

std::unique_ptr<v1::Control::Stub> ControlStub(const std::string& endpoint) {
  return v1::Control::NewStub(grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
}

void Authorize(grpc::ClientContext* ctx, const std::string& token = LocalCluster::kAdminToken) {
  ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

std::unique_ptr<Client> DirectClient(const std::string& endpoint) {
  ClientOptions o;
  o.endpoints = {endpoint};
  o.timeout = absl::Seconds(2);
  o.retry.max_attempts = 1;
  return *Client::Connect(o);
}

grpc::Status Engage(const std::string& control, v1::KillSwitchMode mode, const std::string& why,
                    const std::string& token = LocalCluster::kAdminToken) {
  grpc::ClientContext ctx;
  Authorize(&ctx, token);
  v1::EngageKillSwitchRequest req;
  req.set_mode(mode);
  req.set_reason(why);
  v1::KillSwitchState state;
  return ControlStub(control)->EngageKillSwitch(&ctx, req, &state);
}

// The kill switch as one node's own applied metadata says it is (not as forwarding shows it).
v1::KillSwitchMode ModeOn(const std::string& control) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::KillSwitchState state;
  if (!ControlStub(control)->GetKillSwitch(&ctx, {}, &state).ok()) return v1::KILL_SWITCH_OFF;
  return state.mode();
}

TEST(ControlTest, KillSwitchReachesEveryNodeSurvivesRestartsAndReleases) {
  LocalCluster cluster("killswitch", 3);
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.NewClient()->Put("k", "before").ok());

  // Without the token nothing changes.
  EXPECT_EQ(Engage(cluster.control_endpoint(2), v1::KILL_SWITCH_HALT, "x", "wrong").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(DirectClient(cluster.node(1).endpoint())->Put("k", "still-writable").ok());

  absl::Time engaged = absl::Now();
  ASSERT_TRUE(Engage(cluster.control_endpoint(2), v1::KILL_SWITCH_READ_ONLY, "migration").ok());
  // Every node refuses writes (and still serves reads); measure when each started to.
  double slowest_ms = 0;
  for (size_t n = 1; n <= cluster.size(); ++n) {
    auto c = DirectClient(cluster.node(n).endpoint());
    bool refused = cluster.WaitUntil(
        [&] { return absl::IsFailedPrecondition(c->Put("k", "x").status()); }, absl::Seconds(5));
    ASSERT_TRUE(refused) << "node " << n << " still accepts writes";
    // A refusal can come from the leader a write is forwarded to; the switch has reached this
    // node only once its own metadata replica applied it.
    ASSERT_TRUE(cluster.WaitUntil(
        [&] { return ModeOn(cluster.control_endpoint(n)) == v1::KILL_SWITCH_READ_ONLY; },
        absl::Seconds(5)))
        << "node " << n;
    slowest_ms = std::max(slowest_ms, absl::ToDoubleMilliseconds(absl::Now() - engaged));
    ReadOptions local;
    local.consistency = ReadConsistency::kEventual;
    // Reads are still served (an eventual read on a follower may lag the first put a moment).
    EXPECT_TRUE(cluster.WaitUntil([&] { return c->Get("k", local).ok(); }, absl::Seconds(5)))
        << "node " << n;
  }
  std::printf("kill switch obeyed by every node within %.0f ms of the engage call\n", slowest_ms);

  // Halt, then restart every node: it stays engaged.
  ASSERT_TRUE(Engage(cluster.control_endpoint(1), v1::KILL_SWITCH_HALT, "incident 42").ok());
  // A node stopped before its replica applied the halt learns it only from a leader after the
  // restart; this test is about what each node kept on disk.
  for (size_t n = 1; n <= cluster.size(); ++n) {
    ASSERT_TRUE(cluster.WaitUntil(
        [&] { return ModeOn(cluster.control_endpoint(n)) == v1::KILL_SWITCH_HALT; },
        absl::Seconds(5)))
        << "node " << n;
  }
  for (size_t n = 1; n <= cluster.size(); ++n) ASSERT_EQ(cluster.node(n).Stop(), 0);
  for (size_t n = 1; n <= cluster.size(); ++n) ASSERT_TRUE(cluster.node(n).Start());
  for (size_t n = 1; n <= cluster.size(); ++n) {
    auto r = DirectClient(cluster.node(n).endpoint())->Get("k");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << "node " << n;
    EXPECT_NE(r.status().message().find("incident 42"), std::string::npos) << r.status();
    // Control still answers.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::KillSwitchState state;
    ASSERT_TRUE(ControlStub(cluster.control_endpoint(n))->GetKillSwitch(&ctx, {}, &state).ok());
    EXPECT_EQ(state.mode(), v1::KILL_SWITCH_HALT);
    ASSERT_GE(state.history_size(), 2);
    EXPECT_EQ(state.last().reason(), "incident 42");
    EXPECT_GT(state.last().at_unix_ms(), 0);
    EXPECT_FALSE(state.last().actor().empty());
  }
  grpc::ClientContext ctx;
  Authorize(&ctx);
  v1::ReleaseKillSwitchRequest release;
  release.set_reason("resolved");
  v1::KillSwitchState state;
  ASSERT_TRUE(
      ControlStub(cluster.control_endpoint(3))->ReleaseKillSwitch(&ctx, release, &state).ok());
  for (size_t n = 1; n <= cluster.size(); ++n) {
    auto c = DirectClient(cluster.node(n).endpoint());
    EXPECT_TRUE(cluster.WaitUntil([&] { return c->Put("k", "after").ok(); }, absl::Seconds(5)))
        << "node " << n;
  }
}

TEST(ControlTest, KillSwitchAndRateLimitsHoldOnEveryShardOfAKeyspace) {
  LocalCluster cluster("ks-control", 3);
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  auto admin = cluster.NewAdmin();
  KeyspaceSpec spec;
  spec.name = "carts";
  spec.strategy = "hash";
  spec.shards = 4;
  ASSERT_TRUE(
      cluster.WaitUntil([&] { return admin->CreateKeyspace(spec).ok(); }, absl::Seconds(20)));
  ClientOptions o = cluster.ClientOptionsFor({cluster.node(1).endpoint()});
  o.keyspace = "carts";
  o.retry.max_attempts = 1;
  auto c = *Client::Connect(o);
  std::vector<std::string> keys;
  for (int i = 0; i < 20; ++i) keys.push_back(absl::StrCat("cart", i));  // all four shards
  for (const auto& k : keys) {
    ASSERT_TRUE(cluster.WaitUntil([&] { return c->Put(k, "v").ok(); }, absl::Seconds(15))) << k;
  }
  ASSERT_TRUE(Engage(cluster.control_endpoint(3), v1::KILL_SWITCH_READ_ONLY, "audit").ok());
  for (const auto& k : keys) {
    // The switch reaches each shard's leader through the metadata group, a moment apart: until
    // it has, a probe may still write (the same value, so the check below stays exact).
    ASSERT_TRUE(cluster.WaitUntil(
        [&] { return absl::IsFailedPrecondition(c->Put(k, "v").status()); }, absl::Seconds(5)))
        << k;
    EXPECT_TRUE(absl::IsFailedPrecondition(c->Put(k, "x").status())) << k;
    auto got = c->Get(k);
    ASSERT_TRUE(got.ok()) << k << ": " << got.status();
    EXPECT_EQ(got->value, "v") << "nothing was written while read-only";
  }
  {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    v1::ReleaseKillSwitchRequest release;
    release.set_reason("done");
    v1::KillSwitchState state;
    ASSERT_TRUE(
        ControlStub(cluster.control_endpoint(1))->ReleaseKillSwitch(&ctx, release, &state).ok());
  }
  ASSERT_TRUE(cluster.WaitUntil([&] { return c->Put(keys[0], "w").ok(); }, absl::Seconds(5)));
  // A per-client limit counts requests to every shard alike.
  grpc::ClientContext ctx;
  Authorize(&ctx);
  v1::LimitsConfig limits, applied;
  limits.set_per_client_rps(1);
  limits.set_per_client_burst(5);
  ASSERT_TRUE(ControlStub(cluster.control_endpoint(1))->SetLimits(&ctx, limits, &applied).ok());
  int refused = 0, accepted = 0;
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        refused = accepted = 0;
        for (const auto& k : keys) {
          auto put = c->Put(k, "limited");
          refused += absl::IsResourceExhausted(put.status());
          accepted += put.ok();
        }
        return refused > 0;
      },
      absl::Seconds(10)));
  // Buckets are per node, and the routing cache sends each shard's requests to its leader,
  // wherever that is: up to three nodes' bursts of 5, and about one a second on each.
  EXPECT_LE(accepted, 18) << "over keys of four shards led from up to three nodes";
}

TEST(ControlTest, PerClientRateLimitHoldsWithinTenPercent) {
  LocalCluster cluster("ratelimit", 3);
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  grpc::ClientContext ctx;
  Authorize(&ctx);
  v1::LimitsConfig limits, applied;
  limits.set_per_client_rps(200);
  limits.set_per_client_burst(20);
  ASSERT_TRUE(ControlStub(cluster.control_endpoint(1))->SetLimits(&ctx, limits, &applied).ok());
  // Every node applies the limits (they are replicated).
  auto leader_control = ControlStub(cluster.control_endpoint(leader));
  ASSERT_TRUE(cluster.WaitUntil(
      [&] {
        grpc::ClientContext c;
        v1::LimitsConfig now;
        return leader_control->GetLimits(&c, {}, &now).ok() && now.per_client_rps() == 200;
      },
      absl::Seconds(5)));
  auto r = kv::testing::RunProgram(
      {kv::testing::KvctlBinary(), "--endpoints=" + cluster.node(leader).endpoint(), "-o", "json",
       "bench", "--workload", "put", "--concurrency", "8", "--duration", "3s"},
      "", 60000);
  auto j = nlohmann::json::parse(r.out);
  double ok = j["ops"].get<double>() - j["errors"].get<double>();
  double rate = (ok - 20) / j["seconds"].get<double>();
  std::printf("accepted %.0f puts/s under a 200/s limit (%s rejected)\n", rate,
              j["errors"].dump().c_str());
  EXPECT_GT(j["errors"].get<double>(), 0) << "the load exceeded the limit, so some were refused";
  EXPECT_NEAR(rate, 200, 20);
  EXPECT_NE(j.value("first_error", "").find("RESOURCE_EXHAUSTED"), std::string::npos);
}

TEST(ControlTest, BreakerAroundADeadPeerOpensAndClosesOnRecovery) {
  LocalCluster cluster("breaker", 3);
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  uint64_t leader = cluster.WaitForLeader();
  uint64_t victim = leader % 3 + 1;
  std::string name = absl::StrCat("peer-", victim);
  auto control = ControlStub(cluster.control_endpoint(leader));
  auto state_of = [&]() -> std::string {
    grpc::ClientContext ctx;
    v1::ListBreakersResponse resp;
    if (!control->ListBreakers(&ctx, {}, &resp).ok()) return "?";
    for (const auto& b : resp.breakers()) {
      if (b.name() == name) return b.state();
    }
    return "none";
  };
  EXPECT_EQ(state_of(), "closed");
  cluster.node(victim).Kill9();
  EXPECT_TRUE(cluster.WaitUntil([&] { return state_of() != "closed"; }, absl::Seconds(20)))
      << "breaker around the dead peer did not open";
  ASSERT_TRUE(cluster.node(victim).Start());
  EXPECT_TRUE(cluster.WaitUntil([&] { return state_of() == "closed"; }, absl::Seconds(20)))
      << "breaker did not close after the peer recovered";
  // Operators can force it open and release it.
  grpc::ClientContext ctx;
  Authorize(&ctx);
  v1::SetBreakerRequest req;
  req.set_name(name);
  req.set_override("forced-open");
  v1::Breaker b;
  ASSERT_TRUE(control->SetBreaker(&ctx, req, &b).ok());
  EXPECT_EQ(b.override(), "forced-open");
  grpc::ClientContext ctx2;
  Authorize(&ctx2);
  req.set_override("none");
  ASSERT_TRUE(control->SetBreaker(&ctx2, req, &b).ok());
  EXPECT_EQ(b.override(), "none");
}

grpc::health::v1::HealthCheckResponse::ServingStatus Probe(const std::string& endpoint,
                                                           const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  if (!stub->Check(&ctx, req, &resp).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return resp.status();
}

v1::HealthReport Report(const std::string& control) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::HealthReport r;
  (void)ControlStub(control)->Health(&ctx, {}, &r);
  return r;
}

TEST(ControlTest, HealthTransitionsAndADegradedLeaderHandsOver) {
  // Node 1 believes its disk is nearly full (threshold above any real free space).
  LocalCluster cluster("health", 3, {"--degraded-heartbeat-ms=1500"});
  cluster.EnableSidecar();
  cluster.node(1).AddFlag("--degraded-disk-free-bytes=1000000000000000");
  ASSERT_TRUE(cluster.StartAll());
  using Status = grpc::health::v1::HealthCheckResponse;
  EXPECT_TRUE(
      cluster.WaitUntil([&] { return Probe(cluster.control_endpoint(2), "kv") == Status::SERVING; },
                        absl::Seconds(5)));
  EXPECT_EQ(Probe(cluster.control_endpoint(2), ""), Status::SERVING);
  EXPECT_EQ(Probe(cluster.control_endpoint(2), "raft"), Status::SERVING);
  auto ready = kv::testing::RunProgram({kv::testing::KvctlBinary(),
                                        "--control-endpoints=" + cluster.control_endpoint(2),
                                        "health", "--probe=ready"});
  EXPECT_EQ(ready.exit_code, 0) << ready.out << ready.err;
  // Node 1 is degraded, and if it leads, it hands leadership to a healthy peer.
  EXPECT_TRUE(
      cluster.WaitUntil([&] { return Report(cluster.control_endpoint(1)).status() == "DEGRADED"; },
                        absl::Seconds(5)));
  auto admin = cluster.NewAdmin();
  (void)admin->TransferLeader(1);
  EXPECT_TRUE(cluster.WaitUntil([&] { return cluster.WaitForLeader(absl::Seconds(1), 1) != 0; },
                                absl::Seconds(15)))
      << "a degraded leader kept leading";
  // A follower that stops hearing from the leader turns DEGRADED, then without a quorum the
  // survivor is not ready.
  uint64_t leader = cluster.WaitForLeader();
  uint64_t other = 0;
  for (uint64_t n = 1; n <= 3; ++n) {
    if (n != leader && n != 1) other = n;
  }
  // Freeze both other nodes: the survivor hears nothing and cannot elect anyone.
  cluster.node(leader).SignalStop();
  cluster.node(1).SignalStop();
  EXPECT_TRUE(cluster.WaitUntil(
      [&] {
        auto r = Report(cluster.control_endpoint(other));
        return r.status() != "SERVING" && r.reasons_size() > 0;
      },
      absl::Seconds(10)));
  cluster.node(leader).Kill9();
  cluster.node(1).Kill9();
  EXPECT_TRUE(cluster.WaitUntil(
      [&] { return Probe(cluster.control_endpoint(other), "kv") == Status::NOT_SERVING; },
      absl::Seconds(15)));
  EXPECT_EQ(Probe(cluster.control_endpoint(other), ""), Status::SERVING) << "still alive";
  // kvctl's probes (what the compose file and Kubernetes manifests run) say the same.
  auto probe = [&](const std::string& which) {
    return kv::testing::RunProgram({kv::testing::KvctlBinary(),
                                    "--control-endpoints=" + cluster.control_endpoint(other),
                                    "health", "--probe=" + which});
  };
  auto live = probe("live");
  EXPECT_EQ(live.exit_code, 0) << live.out << live.err;
  EXPECT_NE(live.out.find("SERVING"), std::string::npos) << live.out;
  auto not_ready = probe("ready");
  EXPECT_EQ(not_ready.exit_code, 3) << not_ready.out << not_ready.err;
  EXPECT_NE(not_ready.out.find("NOT_SERVING"), std::string::npos) << not_ready.out;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[4];
      std::snprintf(hex, sizeof(hex), "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

TEST(ControlTest, PrometheusScrapesEveryNodeAndAnswersEveryDashboardQuery) {
  if (access("/usr/bin/prometheus", X_OK) != 0) {
    GTEST_FAIL() << "prometheus is not installed (deploy/install-deps.sh with "
                    "KV_WITH_TEST_TOOLS=1 installs it)";
  }
  LocalCluster cluster("prometheus", 3);
  cluster.EnableSidecar();
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.NewClient()->Put("m", "v").ok());
  std::string config = cluster.root() + "/prometheus.yml";
  {
    std::ofstream f(config);
    f << "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kvd\n"
      << "    static_configs:\n      - targets: ['" << cluster.metrics_endpoint(1) << "', '"
      << cluster.metrics_endpoint(2) << "', '" << cluster.metrics_endpoint(3) << "']\n";
  }
  auto check = kv::testing::RunProgram({"/usr/bin/promtool", "check", "config", config});
  ASSERT_EQ(check.exit_code, 0) << check.out << check.err;
  int port = kv::testing::PickFreePort();
  pid_t pid = fork();
  if (pid == 0) {
    std::string log = cluster.root() + "/prometheus.log";
    FILE* f = std::freopen(log.c_str(), "w", stderr);
    (void)f;
    execl("/usr/bin/prometheus", "prometheus", ("--config.file=" + config).c_str(),
          ("--web.listen-address=127.0.0.1:" + std::to_string(port)).c_str(),
          ("--storage.tsdb.path=" + cluster.root() + "/tsdb").c_str(), nullptr);
    _exit(127);
  }
  auto query = [&](const std::string& expr) {
    return HttpGet(port, "/api/v1/query?query=" + UrlEncode(expr));
  };
  bool all_up = cluster.WaitUntil(
      [&] {
        auto body = query("sum(up{job=\"kvd\"})");
        if (body.empty()) return false;
        auto j = nlohmann::json::parse(body, nullptr, false);
        return !j.is_discarded() && j["data"]["result"].size() == 1 &&
               j["data"]["result"][0]["value"][1] == "3";
      },
      absl::Seconds(30));
  EXPECT_TRUE(all_up) << "Prometheus did not scrape all three nodes";
  auto series =
      nlohmann::json::parse(query("count(kv_raft_state{state=\"term\"})"), nullptr, false);
  ASSERT_FALSE(series.is_discarded());
  EXPECT_EQ(series["data"]["result"][0]["value"][1], "3");
  // Every panel of the Grafana dashboard is a valid query with data behind it.
  std::ifstream dash(std::string(KV_SOURCE_DIR) + "/deploy/grafana/dashboards/kvstore.json");
  auto dashboard = nlohmann::json::parse(dash);
  // The dashboard's variables (node, keyspace) each list values: label_values(METRIC, LABEL)
  // is Grafana's; the same question in PromQL is `count by (LABEL) (METRIC)`.
  std::vector<std::string> variables;
  for (const auto& v : dashboard["templating"]["list"]) {
    std::string q = v["query"];
    std::string inner = q.substr(q.find('(') + 1, q.rfind(')') - q.find('(') - 1);
    std::string metric = inner.substr(0, inner.find(','));
    std::string label = inner.substr(inner.find(',') + 2);
    EXPECT_TRUE(cluster.WaitUntil(
        [&] {
          auto j = nlohmann::json::parse(query("count by (" + label + ") (" + metric + ")"),
                                         nullptr, false);
          return !j.is_discarded() && !j["data"]["result"].empty();
        },
        absl::Seconds(10)))
        << "variable " << v["name"] << " lists nothing: " << q;
    variables.push_back("$" + std::string(v["name"]));
  }
  EXPECT_EQ(variables, (std::vector<std::string>{"$node", "$keyspace"}));
  for (const auto& panel : dashboard["panels"]) {
    std::string expr = panel["targets"][0]["expr"];
    for (const auto& v : variables) {  // "All", as Grafana sends it
      for (size_t at; (at = expr.find(v)) != std::string::npos;) expr.replace(at, v.size(), ".*");
    }
    auto j = nlohmann::json::parse(query(expr), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << expr;
    EXPECT_EQ(j["status"], "success") << panel["title"] << ": " << expr;
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
}

}  // namespace
}  // namespace kv
