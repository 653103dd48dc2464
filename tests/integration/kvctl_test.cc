// kvctl and the example application, run as programs against a real kvd.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/support/kvd_process.h"

namespace kv {
namespace {

using kv::testing::KvctlBinary;
using kv::testing::KvdProcess;
using kv::testing::RunProgram;
using kv::testing::RunResult;

class KvctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(kv::testing::MakeTempDir("kvctl"));
    node_ = new KvdProcess(1, *root_ + "/node1");
    ASSERT_TRUE(node_->Start()) << node_->ReadLog();
  }
  static void TearDownTestSuite() {
    delete node_;
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  RunResult Kvctl(std::vector<std::string> args, const std::string& in = "") {
    args.insert(args.begin(), {KvctlBinary(), "--endpoints=" + node_->endpoint()});
    return RunProgram(args, in);
  }
  static std::string* root_;
  static KvdProcess* node_;
};
std::string* KvctlTest::root_ = nullptr;
KvdProcess* KvctlTest::node_ = nullptr;

TEST_F(KvctlTest, PutGetDelExitCodes) {
  auto put = Kvctl({"put", "color", "blue"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
  EXPECT_NE(put.out.find("OK version="), std::string::npos);
  auto get = Kvctl({"get", "color"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_EQ(get.out, "blue\n");
  EXPECT_EQ(Kvctl({"get", "no-such-key"}).exit_code, 1);
  EXPECT_EQ(Kvctl({"del", "color"}).exit_code, 0);
  EXPECT_EQ(Kvctl({"get", "color"}).exit_code, 1);
}

TEST_F(KvctlTest, GlobalFlagsWorkAfterTheSubcommand) {
  auto put = RunProgram(
      {KvctlBinary(), "put", "late-flags", "v", "-o", "json", "--endpoints=" + node_->endpoint()});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  auto token = nlohmann::json::parse(put.out)["session_token"].get<std::string>();
  // The README's own example: the session token after the subcommand.
  auto get = RunProgram({KvctlBinary(), "get", "late-flags", "--consistency=session",
                         "--session-token=" + token, "--endpoints=" + node_->endpoint()});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v\n");
}

TEST_F(KvctlTest, NodeAndGroupListsAndAnAdminOnlyCreate) {
  nlohmann::json nodes;
  for (int i = 0; i < 100; ++i) {  // the node records itself once its metadata group leads
    auto r = Kvctl({"-o", "json", "node", "list"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nodes = nlohmann::json::parse(r.out)["nodes"];
    if (!nodes.empty()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0]["id"], 1);
  EXPECT_EQ(nodes[0]["state"], "up");
  EXPECT_EQ(nodes[0]["client_address"], node_->endpoint());
  auto groups = Kvctl({"-o", "json", "group", "list"});
  ASSERT_EQ(groups.exit_code, 0) << groups.err;
  auto g = nlohmann::json::parse(groups.out)["groups"];
  ASSERT_EQ(g.size(), 2u) << "the metadata group and the default data group";
  EXPECT_EQ(g[1]["id"], 1);
  EXPECT_EQ(g[1]["hosted_here"], true);
  auto text = Kvctl({"group", "list"});
  EXPECT_NE(text.out.find("GROUP"), std::string::npos);
  // No admin token is configured on this node: creating groups is refused, and says why.
  auto create = Kvctl({"group", "create", "--count", "2"});
  EXPECT_EQ(create.exit_code, 3);
  EXPECT_NE(create.err.find("admin"), std::string::npos) << create.err;
  EXPECT_EQ(Kvctl({"group", "create", "--count", "x"}).exit_code, 2);
}

TEST_F(KvctlTest, CasExitCodesAndJson) {
  auto created = Kvctl({"-o", "json", "cas", "lock", "--expect-absent", "me"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  auto j = nlohmann::json::parse(created.out);
  EXPECT_TRUE(j["succeeded"].get<bool>());
  uint64_t version = j["version"];
  EXPECT_FALSE(j["session_token"].get<std::string>().empty());
  EXPECT_EQ(Kvctl({"cas", "lock", "--expect-absent", "you"}).exit_code, 1);
  EXPECT_EQ(
      Kvctl({"cas", "lock", "--expect-version", std::to_string(version + 100), "you"}).exit_code,
      1);
  EXPECT_EQ(Kvctl({"cas", "lock", "--expect-version", std::to_string(version), "you"}).exit_code,
            0);
  auto got = nlohmann::json::parse(Kvctl({"-o", "json", "get", "lock"}).out);
  EXPECT_EQ(got["value"], "you");
}

TEST_F(KvctlTest, BinaryValueFromStdin) {
  std::string binary("\x00\x01\xff\xfe payload", 12);
  ASSERT_EQ(Kvctl({"put", "blob"}, binary).exit_code, 0);
  auto get = Kvctl({"get", "blob"});
  EXPECT_EQ(get.out, binary);
  auto j = nlohmann::json::parse(Kvctl({"-o", "json", "get", "blob"}).out);
  EXPECT_TRUE(j.contains("value_base64"));
}

// Whatever the bytes, every output mode prints them back without aborting: raw in text mode, and
// in JSON as text when UTF-8, else base64.
TEST_F(KvctlTest, RandomBinaryKeysAndValuesSurviveEveryOutputMode) {
  std::mt19937 rng(20261201);
  auto bytes = [&](size_t n, bool nul_ok) {
    std::string s;
    while (s.size() < n) {
      char c = static_cast<char>(rng() % 256);
      if (c != 0 || nul_ok) s.push_back(c);
    }
    return s;
  };
  auto bytes_of = [](const nlohmann::json& j, const std::string& name) {
    if (j.contains(name)) return j[name].get<std::string>();
    std::string raw;
    EXPECT_TRUE(absl::Base64Unescape(j[name + "_base64"].get<std::string>(), &raw));
    return raw;
  };
  std::map<std::string, std::string> written;
  for (int i = 0; i < 25; ++i) {
    // Keys come from the command line (no NUL there); a prefix keeps them from looking like
    // flags. Values come from stdin and may hold anything.
    std::string key = "bin/" + bytes(1 + rng() % 24, false);
    std::string value = bytes(rng() % 300, true);
    ASSERT_EQ(Kvctl({"put", key}, value).exit_code, 0);
    written[key] = value;
  }
  for (const auto& [key, value] : written) {
    auto text = Kvctl({"get", key});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_EQ(text.out, value);
    auto json = Kvctl({"-o", "json", "get", key});
    ASSERT_EQ(json.exit_code, 0) << json.err;
    auto j = nlohmann::json::parse(json.out);
    EXPECT_EQ(bytes_of(j, "key"), key);
    EXPECT_EQ(bytes_of(j, "value"), value);
  }
  auto scan = Kvctl({"-o", "json", "scan", "--prefix", "bin/", "--all"});
  ASSERT_EQ(scan.exit_code, 0) << scan.err;
  std::map<std::string, std::string> scanned;
  auto page = nlohmann::json::parse(scan.out);
  for (const auto& kv : page["kvs"]) scanned[bytes_of(kv, "key")] = bytes_of(kv, "value");
  EXPECT_EQ(scanned, written);
  auto keys_only = Kvctl({"scan", "--prefix", "bin/", "--keys-only"});
  EXPECT_EQ(keys_only.exit_code, 0) << keys_only.err;
}

TEST_F(KvctlTest, ScanPrefixAndRange) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(Kvctl({"put", "s/" + std::to_string(i), "v"}).exit_code, 0);
  }
  auto scan = Kvctl({"-o", "json", "scan", "--prefix", "s/"});
  ASSERT_EQ(scan.exit_code, 0) << scan.err;
  EXPECT_EQ(nlohmann::json::parse(scan.out)["kvs"].size(), 5u);
  auto range = Kvctl({"-o", "json", "scan", "--start", "s/1", "--end", "s/3"});
  EXPECT_EQ(nlohmann::json::parse(range.out)["kvs"].size(), 2u);
  auto paged = Kvctl({"-o", "json", "scan", "--prefix", "s/", "--limit", "2", "--all"});
  EXPECT_EQ(nlohmann::json::parse(paged.out)["kvs"].size(), 5u);
  // A script pages by hand: each page's token goes back unchanged into the next call.
  std::vector<std::string> seen;
  std::string token;
  for (int page = 0; page < 10; ++page) {
    auto r = Kvctl(
        {"-o", "json", "scan", "--prefix", "s/", "--limit", "2", "--continuation-token", token});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    for (const auto& kv : j["kvs"]) seen.push_back(kv["key"]);
    token = j["continuation_token"];
    if (token.empty()) break;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"s/0", "s/1", "s/2", "s/3", "s/4"}));
  EXPECT_EQ(Kvctl({"scan", "--prefix", "s/", "--continuation-token", "%%%"}).exit_code, 2)
      << "a token that is not one is refused";
}

TEST_F(KvctlTest, TableOutputAlignsListingsAndEscapesBytes) {
  ASSERT_EQ(Kvctl({"put", "tbl/a", "apple"}).exit_code, 0);
  ASSERT_EQ(Kvctl({"put", "tbl/b"}, std::string("\x01\xff", 2)).exit_code, 0);
  auto r = Kvctl({"-o", "table", "scan", "--prefix", "tbl/"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0].rfind("KEY", 0), 0u);
  EXPECT_NE(lines[0].find("VALUE"), std::string::npos);
  EXPECT_NE(lines[1].find("apple"), std::string::npos);
  EXPECT_NE(lines[2].find("\\x01\\xff"), std::string::npos) << "bytes escaped: " << lines[2];
  EXPECT_EQ(lines[1].find("apple"), lines[2].find("\\x01")) << "the value column is aligned";
  EXPECT_EQ(Kvctl({"-o", "table", "node", "list"}).exit_code, 0) << "listing commands take it";
}

TEST_F(KvctlTest, UsageAndBadInputGiveExitCode2) {
  EXPECT_EQ(Kvctl({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"get"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"cas", "k", "v"}).exit_code, 2);
  EXPECT_EQ(Kvctl({"get", "k", "--consistency", "psychic"}).exit_code, 2);
  auto empty_key = Kvctl({"put", "", "v"});
  EXPECT_EQ(empty_key.exit_code, 2);
  EXPECT_NE(empty_key.err.find("key must not be empty"), std::string::npos);
  auto no_endpoints = RunProgram({KvctlBinary(), "get", "k"});
  EXPECT_EQ(no_endpoints.exit_code, 2);
}

TEST_F(KvctlTest, HelpForEveryCommand) {
  for (std::string cmd : {"get", "put", "del", "scan", "cas", "bench"}) {
    auto r = RunProgram({KvctlBinary(), cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << cmd;
  }
}

TEST_F(KvctlTest, VersionNeedsNoEndpointAndPrintsJson) {
  auto text = RunProgram({KvctlBinary(), "version"});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_EQ(text.out, "kvctl " KV_VERSION "\n");
  auto j = RunProgram({KvctlBinary(), "version", "-o", "json"});
  EXPECT_EQ(j.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(j.out)["kvctl"], KV_VERSION);
}

TEST_F(KvctlTest, MemberListShowsTheVoters) {
  auto j = Kvctl({"-o", "json", "member", "list"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto members = nlohmann::json::parse(j.out)["members"];
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(members[0]["id"], 1);
  EXPECT_EQ(members[0]["voter"], true);
  auto text = Kvctl({"member", "list"});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("voter"), std::string::npos) << text.out;
}

TEST_F(KvctlTest, BashCompletionCompletesCommandsAndFlags) {
  auto script = RunProgram({KvctlBinary(), "completion", "bash"});
  ASSERT_EQ(script.exit_code, 0);
  // What bash offers for a partly typed line, with the generated script sourced.
  auto complete = [&](const std::string& line_words, int cword) {
    std::string probe = script.out + "COMP_WORDS=(" + line_words +
                        "); COMP_CWORD=" + std::to_string(cword) +
                        "; _kvctl; echo \"${COMPREPLY[*]}\"\n";
    return RunProgram({"/bin/bash", "--norc", "-s"}, probe).out;
  };
  EXPECT_EQ(complete("kvctl mem", 1), "member\n");
  EXPECT_EQ(complete("kvctl member l", 2), "list\n");
  EXPECT_EQ(complete("kvctl keyspace create orders --str", 4), "--strategy\n");
  EXPECT_NE(complete("kvctl scan --pre", 2).find("--prefix"), std::string::npos);
  EXPECT_NE(complete("kvctl get k --endp", 3).find("--endpoints"), std::string::npos)
      << "global flags complete after a subcommand too";
  EXPECT_EQ(RunProgram({KvctlBinary(), "completion", "zsh"}).exit_code, 2) << "bash only";
}

TEST_F(KvctlTest, NetworkErrorGivesExitCode3) {
  int dead = kv::testing::PickFreePort();
  auto r = RunProgram(
      {KvctlBinary(), "--endpoints=127.0.0.1:" + std::to_string(dead), "--timeout=1s", "get", "k"});
  EXPECT_EQ(r.exit_code, 3);
}

TEST_F(KvctlTest, DataAndControlCommandsShareOneJsonErrorShape) {
  std::string dead = "127.0.0.1:" + std::to_string(kv::testing::PickFreePort());
  auto data =
      RunProgram({KvctlBinary(), "-o", "json", "--endpoints=" + dead, "--timeout=1s", "get", "k"});
  auto control = RunProgram({KvctlBinary(), "-o", "json", "--control-endpoints=" + dead,
                             "--timeout=1s", "limits", "get"});
  for (const auto* r : {&data, &control}) {
    EXPECT_EQ(r->exit_code, 3);
    auto j = nlohmann::json::parse(r->out);
    EXPECT_EQ(j["error"], "UNAVAILABLE") << r->out;
    EXPECT_TRUE(j["message"].is_string());
  }
}

TEST_F(KvctlTest, EndpointsFromEnvironment) {
  setenv("KVCTL_ENDPOINTS", node_->endpoint().c_str(), 1);
  auto r = RunProgram({KvctlBinary(), "put", "env", "ok"});
  unsetenv("KVCTL_ENDPOINTS");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(KvctlTest, BenchReportsJson) {
  auto r = Kvctl(
      {"-o", "json", "bench", "--workload", "mixed", "--ops", "500", "-c", "8", "--keys", "100"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ops"].get<uint64_t>(), 500u);
  EXPECT_EQ(j["errors"].get<uint64_t>(), 0u);
  EXPECT_GT(j["p99_us"].get<double>(), 0);
  EXPECT_FALSE(j["interrupted"].get<bool>());
  EXPECT_NE(r.err.find("preloading: 100 puts"), std::string::npos)
      << "it says what it writes before a mixed workload: " << r.err;
  EXPECT_EQ(j["not_found"].get<uint64_t>(), 0u) << "the preload wrote every key";
}

TEST_F(KvctlTest, BenchShowsProgressAndReportsOnCtrlC) {
  auto r = RunProgram({KvctlBinary(), "--endpoints=" + node_->endpoint(), "-o", "json", "bench",
                       "--duration", "60s", "-c", "4"},
                      "", 30000, /*interrupt_after_ms=*/2500);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["interrupted"].get<bool>());
  EXPECT_GT(j["ops"].get<uint64_t>(), 0u);
  EXPECT_LT(j["seconds"].get<double>(), 20) << "stopped by Ctrl-C, not by --duration";
  EXPECT_NE(r.err.find("bench   1s:"), std::string::npos) << "a progress line a second: " << r.err;
  EXPECT_NE(r.err.find("p99"), std::string::npos);
  EXPECT_NE(r.err.find("errors so far 0"), std::string::npos);
}

TEST_F(KvctlTest, ExampleApplicationRuns) {
  auto r = RunProgram({KV_EXAMPLE_BINARY, node_->endpoint()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("greeting = hello, world"), std::string::npos);
}

}  // namespace
}  // namespace kv

namespace kv {
namespace {

// The README's "Using it" commands, run as written (only the binary's path, the token, the
// photo and the benchmark's length filled in) against a fresh node, with what their comments
// promise.
TEST(KvctlReadme, UsingItExamplesRunAsWritten) {
  std::ifstream readme(std::string(KV_SOURCE_DIR) + "/README.md");
  std::string text((std::istreambuf_iterator<char>(readme)), {});
  size_t section = text.find("## Using it\n");
  ASSERT_NE(section, std::string::npos);
  size_t begin = text.find("```sh\n", section) + 6;
  size_t end = text.find("```", begin);
  std::vector<std::string> lines = absl::StrSplit(text.substr(begin, end - begin), '\n');
  std::string root = kv::testing::MakeTempDir("readme");
  KvdProcess node(1, root + "/node1");
  ASSERT_TRUE(node.Start()) << node.ReadLog();
  std::string photo = root + "/photo.jpg";
  std::ofstream(photo, std::ios::binary) << std::string("\xff\xd8\xff\xe0\0JFIF", 9);
  std::string token;
  std::map<std::string, RunResult> ran;  // by the command as the README writes it
  for (std::string line : lines) {
    if (size_t comment = line.find("  #"); comment != std::string::npos) line.resize(comment);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (line.empty() || line.rfind("export ", 0) == 0) continue;
    std::string cmd = line;
    auto replace = [&cmd](const std::string& from, const std::string& to) {
      // `to` may contain `from` (the binary's path does): search on after each replacement.
      for (size_t at = 0; (at = cmd.find(from, at)) != std::string::npos; at += to.size()) {
        cmd.replace(at, from.size(), to);
      }
    };
    replace("build/bin/kvctl", KvctlBinary());
    replace("< photo.jpg", "< " + photo);
    replace("--session-token=TOKEN", "--session-token=" + token);
    replace("--duration 10s", "--duration 1s");
    if (cmd.rfind("source ", 0) == 0) cmd = "bash -c '" + cmd + " && complete -p kvctl'";
    auto r = RunProgram({"/bin/sh", "-c", "KVCTL_ENDPOINTS=" + node.endpoint() + " " + cmd});
    if (line.find("-o json get greeting") != std::string::npos && r.exit_code == 0) {
      token = nlohmann::json::parse(r.out)["session_token"];
    }
    ran[line] = r;
  }
  auto run = [&](const std::string& prefix) -> const RunResult& {
    for (const auto& [line, r] : ran) {
      if (line.rfind("build/bin/kvctl " + prefix, 0) == 0 || line.rfind(prefix, 0) == 0) return r;
    }
    ADD_FAILURE() << "the README no longer shows: " << prefix;
    static RunResult none;
    return none;
  };
  EXPECT_EQ(run("put greeting hello").out, "OK version=3\n") << run("put greeting hello").err;
  EXPECT_EQ(run("get greeting").out, "hello\n");
  auto json_get = nlohmann::json::parse(run("-o json get greeting").out);
  EXPECT_EQ(json_get["value"], "hello");
  EXPECT_EQ(json_get["version"], 3);
  EXPECT_EQ(run("put photo").exit_code, 0) << run("put photo").err;
  EXPECT_NE(run("scan --prefix gr").out.find("greeting"), std::string::npos);
  EXPECT_EQ(run("scan --start a --end m").exit_code, 0) << run("scan --start a --end m").err;
  EXPECT_EQ(run("cas greeting --expect-version 3").exit_code, 0)
      << run("cas greeting --expect-version 3").out;
  EXPECT_EQ(run("cas lock --expect-absent").exit_code, 0);
  EXPECT_EQ(run("del greeting").exit_code, 0);
  // Deleted by the line before: with the session token, the read sees the delete.
  EXPECT_EQ(run("get greeting --consistency=session").exit_code, 1)
      << run("get greeting --consistency=session").err;
  EXPECT_EQ(run("cluster status").exit_code, 0) << run("cluster status").err;
  EXPECT_EQ(run("bench").exit_code, 0) << run("bench").err;
  EXPECT_EQ(run("version").out, std::string("kvctl ") + KV_VERSION + "\n");
  EXPECT_NE(run("source <(").out.find("kvctl"), std::string::npos) << run("source <(").err;
  for (const auto& [line, r] : ran) {
    EXPECT_NE(r.exit_code, 2) << "a usage error: " << line << "\n" << r.err;
  }
  EXPECT_EQ(node.Stop(), 0);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace kv
