// Edge checks of what arrives from outside: control-request bounds, addresses, token files,
// forwarded commands. Pure functions, no processes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "server/authenticator.h"
#include "server/node_config.h"
#include "server/raft_service.h"
#include "server/status_board.h"
#include "server/validation.h"

namespace kv::server {
namespace {

TEST(EdgeTest, ReasonsAreBoundedUtf8WithoutControlCharacters) {
  EXPECT_TRUE(ValidateReason("disk migration, ticket #42 — é").ok());
  EXPECT_TRUE(ValidateReason(std::string(kMaxReasonBytes, 'r')).ok());
  EXPECT_FALSE(ValidateReason(std::string(kMaxReasonBytes + 1, 'r')).ok());
  EXPECT_FALSE(ValidateReason("bad \xff byte").ok());
  EXPECT_FALSE(ValidateReason("cut \xe2\x82").ok());
  EXPECT_FALSE(ValidateReason("new\nline").ok());
}

TEST(EdgeTest, LimitsAreFiniteNonNegativeAndForKnownMethods) {
  v1::LimitsConfig ok;
  ok.set_per_client_rps(100);
  (*ok.mutable_per_method_rps())["Put"] = 10;
  EXPECT_TRUE(ValidateLimits(ok).ok());
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -1.0, 1e12}) {
    v1::LimitsConfig l;
    l.set_per_client_burst(bad);
    EXPECT_FALSE(ValidateLimits(l).ok()) << bad;
    v1::LimitsConfig m;
    (*m.mutable_per_method_rps())["Get"] = bad;
    EXPECT_FALSE(ValidateLimits(m).ok()) << bad;
  }
  v1::LimitsConfig unknown;
  (*unknown.mutable_per_method_rps())["Drop"] = 1;
  EXPECT_FALSE(ValidateLimits(unknown).ok());
}

TEST(EdgeTest, AddressesAreHostAndPort) {
  for (const char* good : {"127.0.0.1:7001", "node-3.example:7301", "[::1]:7001", "h:1"}) {
    EXPECT_TRUE(ValidateAddress(good, "address").ok()) << good;
  }
  for (const char* bad : {"", "7001", ":7001", "host:", "host:0", "host:65536", "host:+80",
                          "ho st:80", "host:80 ", "[::1:80", "a\x01:80"}) {
    EXPECT_FALSE(ValidateAddress(bad, "address").ok()) << bad;
  }
  EXPECT_FALSE(ValidateAddress(std::string(300, 'h') + ":80", "address").ok());
}

TEST(EdgeTest, ClientTokenFilesNameEachToken) {
  auto parsed =
      ParseClientTokens("# comment\n\nalice 0123456789abcdef0123\n bob  fedcba9876543210 \n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].second, "alice");
  EXPECT_EQ((*parsed)[1].first, "fedcba9876543210");
  EXPECT_FALSE(ParseClientTokens("alice short\n").ok());
  EXPECT_FALSE(ParseClientTokens("admin 0123456789abcdef0123\n").ok());
  EXPECT_FALSE(ParseClientTokens("one two three\n").ok());
}

TEST(EdgeTest, WhoMaySendAGroupTraffic) {
  raftpb::ConfState conf;
  for (uint64_t id : {1, 2, 4}) conf.add_voters()->set_id(id);
  const std::set<uint64_t> none, removed_3 = {3}, vouched_3 = {2, 3, 4};
  struct Case {
    const char* what;
    const raftpb::ConfState& conf;
    const std::set<uint64_t>& removed;
    const std::set<uint64_t>& vouched;
    uint64_t node;
    bool certified, allowed;
  };
  raftpb::ConfState unknown;
  std::vector<Case> cases = {
      {"a member", conf, none, none, 2, false, true},
      {"a stranger with a peer token", conf, none, none, 3, false, false},
      {"a stranger whose certificate names it", conf, none, none, 3, true, true},
      {"a node seen removed, even with its certificate", conf, removed_3, none, 3, true, false},
      {"a node seen removed that a newer membership names", conf, removed_3, vouched_3, 3, false,
       true},
      {"anyone authenticated while no membership is known", unknown, none, none, 9, false, true},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(SenderAllowed(c.conf, c.removed, c.vouched, c.node, c.certified), c.allowed)
        << c.what;
  }
}

TEST(EdgeTest, ConstantTimeEqualsIsEquality) {
  EXPECT_TRUE(ConstantTimeEquals("secret-token", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-token", "secret-tokeN"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret-token"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(EdgeTest, ForwardedCommandsFollowTheClientRulesAndCarryNoSystemWrites) {
  RequestLimits limits;
  internal::Command put;
  put.mutable_put()->set_key("k");
  put.mutable_put()->set_value("v");
  EXPECT_TRUE(ValidateForwardedCommand(put, 1, 0, limits).ok());
  put.mutable_put()->set_key("");
  EXPECT_FALSE(ValidateForwardedCommand(put, 1, 0, limits).ok());
  put.mutable_put()->set_key(std::string(limits.max_key_bytes + 1, 'k'));
  EXPECT_FALSE(ValidateForwardedCommand(put, 1, 0, limits).ok());
  put.mutable_put()->set_key("k");
  put.mutable_put()->set_value(std::string(limits.max_value_bytes + 1, 'v'));
  EXPECT_FALSE(ValidateForwardedCommand(put, 1, 0, limits).ok());
  internal::Command system;
  system.mutable_system_put()->set_key("killswitch");
  EXPECT_EQ(ValidateForwardedCommand(system, 1, 0, limits).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(ValidateForwardedCommand(system, 0, 0, limits).ok());
  EXPECT_FALSE(ValidateForwardedCommand(internal::Command(), 1, 0, limits).ok());
}

}  // namespace
}  // namespace kv::server
