// Integration tests against real kvd processes on loopback, through the client library.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kv/client.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/kvd_process.h"

namespace kv {
namespace {

using kv::testing::KvdProcess;

class KvdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = kv::testing::MakeTempDir("kvd");
    node_ = std::make_unique<KvdProcess>(1, root_ + "/node1");
  }
  void TearDown() override {
    node_.reset();
    if (!HasFailure()) std::filesystem::remove_all(root_);
  }
  void StartNode() { ASSERT_TRUE(node_->Start()) << node_->ReadLog(); }
  std::unique_ptr<Client> Connect() {
    ClientOptions o;
    o.endpoints = {node_->endpoint()};
    o.timeout = absl::Seconds(10);
    return *Client::Connect(o);
  }
  std::unique_ptr<v1::KV::Stub> RawStub() {
    return v1::KV::NewStub(
        grpc::CreateChannel(node_->endpoint(), grpc::InsecureChannelCredentials()));
  }
  std::string root_;
  std::unique_ptr<KvdProcess> node_;
};

TEST_F(KvdTest, PutGetDeleteCasScan) {
  StartNode();
  auto c = Connect();
  auto p1 = c->Put("alpha", "1");
  ASSERT_TRUE(p1.ok()) << p1.status();
  auto g = c->Get("alpha");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->value, "1");
  EXPECT_EQ(g->version, p1->version);
  EXPECT_TRUE(absl::IsNotFound(c->Get("missing").status()));

  auto cas_ok = c->CompareAndSwap("alpha", p1->version, "2");
  ASSERT_TRUE(cas_ok.ok());
  EXPECT_TRUE(cas_ok->succeeded);
  EXPECT_GT(cas_ok->version, p1->version);
  auto cas_stale = c->CompareAndSwap("alpha", p1->version, "3");
  ASSERT_TRUE(cas_stale.ok());
  EXPECT_FALSE(cas_stale->succeeded);
  ASSERT_TRUE(cas_stale->current.has_value());
  EXPECT_EQ(cas_stale->current->value, "2");
  auto absent = c->CompareAndSwap("alpha", 0, "x");
  EXPECT_FALSE(absent->succeeded);
  auto created = c->CompareAndSwap("beta", 0, "b");
  EXPECT_TRUE(created->succeeded);

  auto d = c->Delete("alpha");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->existed);
  EXPECT_FALSE(c->Delete("alpha")->existed);
  EXPECT_TRUE(absl::IsNotFound(c->Get("alpha").status()));

  for (int i = 0; i < 25; ++i) ASSERT_TRUE(c->Put(absl::StrCat("p/", 100 + i), "v").ok());
  ScanRequest req;
  req.prefix = "p/";
  req.limit = 10;
  auto page = c->Scan(req);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->kvs.size(), 10u);
  EXPECT_FALSE(page->continuation_token.empty());
  auto all = c->ScanAll(req, 1000);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 25u);
  EXPECT_EQ(all->front().key, "p/100");
  EXPECT_EQ(all->back().key, "p/124");
  ScanRequest range;
  range.start = "p/110";
  range.end = "p/115";
  EXPECT_EQ(c->ScanAll(range, 1000)->size(), 5u);
  EXPECT_FALSE(c->session_token().empty());
}

TEST_F(KvdTest, BadInputIsRejectedAndChangesNothing) {
  node_->AddFlag("--max-key-bytes=16");
  node_->AddFlag("--max-value-bytes=64");
  StartNode();
  auto c = Connect();
  ASSERT_TRUE(c->Put("keep", "v").ok());
  auto before = c->ScanAll({}, 100);

  auto expect_invalid = [](const absl::Status& s, const std::string& fragment) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s;
  };
  expect_invalid(c->Put("", "v").status(), "key must not be empty");
  expect_invalid(c->Put(std::string(17, 'k'), "v").status(), "the limit is 16 bytes");
  expect_invalid(c->Put("k", std::string(65, 'v')).status(), "the limit is 64 bytes");
  expect_invalid(c->CompareAndSwap("", 0, "v").status(), "key must not be empty");
  ScanRequest bad_range;
  bad_range.start = "z";
  bad_range.end = "a";
  expect_invalid(c->Scan(bad_range).status(), "start must be less than end");

  auto stub = RawStub();
  {
    grpc::ClientContext ctx;
    v1::PutRequest req;
    req.set_key("k");
    req.mutable_write()->set_consistency(static_cast<v1::WriteConsistency>(9));
    v1::PutResponse resp;
    auto s = stub->Put(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("unknown write consistency 9"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    v1::GetRequest req;
    req.set_key("keep");
    req.mutable_read()->set_consistency(static_cast<v1::ReadConsistency>(99));
    v1::GetResponse resp;
    EXPECT_EQ(stub->Get(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::CompareAndSwapRequest req;
    req.set_key("k");
    v1::CompareAndSwapResponse resp;
    EXPECT_EQ(stub->CompareAndSwap(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto after = c->ScanAll({}, 100);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), before->size());
  EXPECT_EQ(after->front().version, before->front().version);
  // The node is still healthy.
  EXPECT_TRUE(c->Put("keep2", "v").ok());
}

TEST_F(KvdTest, RestartKeepsDataAndVersions) {
  StartNode();
  std::map<std::string, uint64_t> versions;
  {
    auto c = Connect();
    for (int i = 0; i < 50; ++i) {
      std::string k = absl::StrCat("k", i);
      auto r = c->Put(k, absl::StrCat("v", i));
      ASSERT_TRUE(r.ok());
      versions[k] = r->version;
    }
    ASSERT_TRUE(c->Delete("k7").ok());
    versions.erase("k7");
  }
  EXPECT_EQ(node_->Stop(), 0) << "graceful shutdown on SIGTERM";
  EXPECT_NE(node_->ReadLog().find("SIGTERM received"), std::string::npos);
  StartNode();
  auto c = Connect();
  for (const auto& [k, v] : versions) {
    auto g = c->Get(k);
    ASSERT_TRUE(g.ok()) << k;
    EXPECT_EQ(g->version, v);
    EXPECT_EQ(g->value, "v" + k.substr(1));
  }
  EXPECT_TRUE(absl::IsNotFound(c->Get("k7").status()));
  // New writes continue the version sequence.
  EXPECT_GT(c->Put("k1", "x")->version, versions["k49"]);
}

TEST_F(KvdTest, AcknowledgedWritesSurviveKill9) {
  StartNode();
  std::mutex mu;
  std::map<std::string, uint64_t> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 8; ++w) {
    writers.emplace_back([&, w] {
      ClientOptions o;
      o.endpoints = {node_->endpoint()};
      o.timeout = absl::Seconds(2);
      o.retry.max_attempts = 1;
      auto c = *Client::Connect(o);
      for (int i = 0; !stop.load() && i < 100000; ++i) {
        std::string k = absl::StrCat("w", w, "-", i);
        auto r = c->Put(k, k);
        if (!r.ok()) continue;  // not acknowledged: no promise to check
        std::lock_guard<std::mutex> lock(mu);
        acked[k] = r->version;
      }
    });
  }
  // Let writes flow, then kill while requests are in flight.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::lock_guard<std::mutex> lock(mu);
    if (acked.size() >= 300) break;
  }
  node_->Kill9();
  stop = true;
  for (auto& t : writers) t.join();
  ASSERT_GE(acked.size(), 300u);

  StartNode();
  auto c = Connect();
  size_t checked = 0;
  for (const auto& [k, v] : acked) {
    auto g = c->Get(k);
    ASSERT_TRUE(g.ok()) << "acknowledged write " << k << " lost: " << g.status();
    EXPECT_EQ(g->value, k);
    EXPECT_EQ(g->version, v);
    ++checked;
  }
  EXPECT_EQ(checked, acked.size());
}

TEST_F(KvdTest, RefusesDataDirectoryOfAnotherNode) {
  StartNode();
  ASSERT_EQ(node_->Stop(), 0);
  KvdProcess impostor(2, node_->data_dir());
  EXPECT_FALSE(impostor.Start(5000));
  std::string log = impostor.ReadLog();
  EXPECT_NE(log.find("belongs to node 1, not node 2"), std::string::npos) << log;
}

TEST_F(KvdTest, RefusesCorruptedState) {
  StartNode();
  ASSERT_TRUE(Connect()->Put("k", "v").ok());
  ASSERT_EQ(node_->Stop(), 0);
  ASSERT_TRUE(kv::testing::CorruptManifest(node_->data_dir()));
  KvdProcess again(1, node_->data_dir());
  EXPECT_FALSE(again.Start(5000));
  EXPECT_EQ(again.WaitExit(100), -1);  // already reaped by Start
  std::string log = again.ReadLog();
  EXPECT_NE(log.find("refusing to start"), std::string::npos) << log;
}

TEST_F(KvdTest, RefusesAnAddressAnotherNodeListensOn) {
  StartNode();
  // Without this refusal the kernel would share the port (SO_REUSEPORT) and split clients and
  // peers between two unrelated nodes.
  auto r =
      kv::testing::RunProgram({kv::testing::KvdBinary(), "--node-id=1",
                               "--data-dir=" + root_ + "/second", "--listen=" + node_->endpoint()},
                              "", 10000);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot listen on " + node_->endpoint()), std::string::npos) << r.err;
  EXPECT_TRUE(Connect()->Put("still", "served").ok());
}

TEST_F(KvdTest, RejectsBadFlags) {
  auto r = kv::testing::RunProgram(
      {kv::testing::KvdBinary(), "--node-id=0", "--data-dir=" + root_ + "/x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--node-id must be >= 1"), std::string::npos) << r.err;
  auto help = kv::testing::RunProgram({kv::testing::KvdBinary(), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--node-id", "--data-dir", "--listen", "--peers", "--config",
                           "--max-key-bytes", "--max-value-bytes"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
}

TEST_F(KvdTest, LogsJsonLinesWithNodeAndGroupAndHonoursTheLevel) {
  node_->AddFlag("--log-format=json");
  StartNode();
  ASSERT_TRUE(Connect()->Put("k", "v").ok());
  ASSERT_EQ(node_->Stop(), 0);
  std::string log = node_->ReadLog();
  int lines = 0;
  bool group_event = false, stopped = false;
  for (const auto& line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    auto event = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(event.is_discarded()) << "not a JSON line: " << line;
    ASSERT_TRUE(event.contains("ts") && event.contains("level") && event.contains("msg")) << line;
    EXPECT_EQ(event["node"], 1) << line;
    group_event |= event.contains("group");
    stopped |= event["msg"] == "stopped";
    ++lines;
  }
  EXPECT_GT(lines, 2);
  EXPECT_TRUE(group_event) << "a leader election names its group: " << log;
  EXPECT_TRUE(stopped) << log;

  // At --log-level=warning a clean start, a request and a stop print nothing; nothing is logged
  // per request at the default level either (one put more adds no line).
  KvdProcess quiet(1, node_->data_dir(), node_->port());  // appends to the same log file
  size_t before = log.size();
  quiet.AddFlag("--log-level=warning");
  ASSERT_TRUE(quiet.Start()) << quiet.ReadLog();
  ASSERT_TRUE(Connect()->Put("k2", "v").ok());
  ASSERT_EQ(quiet.Stop(), 0);
  EXPECT_EQ(quiet.ReadLog().substr(before), "");

  auto bad = kv::testing::RunProgram({kv::testing::KvdBinary(), "--node-id=1",
                                      "--data-dir=" + root_ + "/y", "--log-level=chatty"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown log level 'chatty'"), std::string::npos) << bad.err;
}

TEST_F(KvdTest, ConfigFileSetsFlags) {
  std::string cfg = root_ + "/kvd.toml";
  std::ofstream(cfg) << "node-id = 1\ndata-dir = \"" << node_->data_dir()
                     << "\"\nmax-value-bytes = 8\n";
  KvdProcess configured(1, node_->data_dir(), node_->port());
  // --node-id and --data-dir from the file; KvdProcess also passes them, equal values.
  configured.AddFlag("--config=" + cfg);
  ASSERT_TRUE(configured.Start()) << configured.ReadLog();
  auto c = Connect();
  EXPECT_TRUE(c->Put("k", "12345678").ok());
  EXPECT_EQ(c->Put("k", "123456789").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kv

namespace kv {
namespace {

TEST_F(KvdTest, ClientBreakerSkipsADeadEndpoint) {
  StartNode();
  ClientOptions o;
  std::string dead = absl::StrCat("127.0.0.1:", kv::testing::PickFreePort());
  o.endpoints = {dead, node_->endpoint()};
  o.timeout = absl::Seconds(5);
  auto c = *Client::Connect(o);
  // The dead endpoint comes first: every call still succeeds through the live one.
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(c->Put(absl::StrCat("b", i), "v").ok());
  // A client that only knows the dead endpoint sees its breaker open after enough failures.
  ClientOptions only_dead;
  only_dead.endpoints = {dead};
  only_dead.timeout = absl::Milliseconds(300);
  only_dead.retry.max_attempts = 1;
  auto d = *Client::Connect(only_dead);
  for (int i = 0; i < 15; ++i) (void)d->Get("x");
  ASSERT_EQ(d->EndpointBreakers().size(), 1u);
  EXPECT_EQ(d->EndpointBreakers()[0].state, "open");
}

// A client destroyed with asynchronous calls in flight waits for their callbacks: none runs
// on a destroyed client, and none is still running when the destructor returns.
TEST_F(KvdTest, DestroyingAClientWaitsForItsAsynchronousCalls) {
  StartNode();
  constexpr int kCalls = 200;
  std::atomic<int> callbacks{0}, succeeded{0};
  {
    auto c = Connect();
    for (int i = 0; i < kCalls; ++i) {
      auto done = [&](auto r) {
        if (r.ok()) succeeded.fetch_add(1);
        callbacks.fetch_add(1);
      };
      if (i % 2 == 0) {
        c->PutAsync(absl::StrCat("async", i), "v",
                    [done](absl::StatusOr<WriteResult> r) { done(std::move(r)); });
      } else {
        c->GetAsync(absl::StrCat("async", i - 1),
                    [done](absl::StatusOr<KeyValue> r) { done(std::move(r).status()); });
      }
    }
  }
  EXPECT_EQ(callbacks.load(), kCalls);
  EXPECT_GE(succeeded.load(), kCalls / 2);  // every put; a get may run before its put landed
  auto c = Connect();
  for (int i = 0; i < kCalls; i += 2) {
    EXPECT_TRUE(c->Get(absl::StrCat("async", i)).ok()) << i;
  }
}

}  // namespace
}  // namespace kv
