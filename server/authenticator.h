// Who a request comes from, decided only by what was authenticated.
//
// Clients and operators (client and control listeners): a verified client certificate names the
// caller (its first SAN entry, else its common name); else a bearer token (`authorization:
// Bearer T`) that is the admin token or is listed in --client-tokens-file; else, only when the
// operator trusts it (--trust-client-identity-header), the self-declared `kv-client-identity`
// header; else the caller's IP address. The admin role belongs to certificates named `admin`
// and to whoever presents the admin token. A presented token that matches nothing is refused,
// never ignored.
//
// Peers (peer listener): the node a message claims to come from must be the node the transport
// authenticated: its certificate names `node-N`, or, without peer TLS, it presented the
// cluster's peer token (which proves membership of the cluster, not which member).
//
// Tokens are compared in constant time. Thread-safe (immutable after construction).
#pragma once

#include <grpcpp/server_context.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kv::server {

inline constexpr char kAdminName[] = "admin";

struct Caller {
  std::string name;
  bool admin = false;
};

struct AuthOptions {
  std::string admin_token;
  // Per-client bearer tokens: token -> client name.
  std::vector<std::pair<std::string, std::string>> client_tokens;
  bool trust_identity_header = false;
};

// Parses --client-tokens-file: one `NAME TOKEN` per line, `#` comments, blank lines ignored.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseClientTokens(
    const std::string& text);
// Reads a one-line secret file (admin or peer token), trimmed; refuses an empty one.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag);

bool ConstantTimeEquals(const std::string& a, const std::string& b);

class Authenticator {
 public:
  explicit Authenticator(AuthOptions options);

  absl::StatusOr<Caller> Identify(const grpc::ServerContextBase& ctx) const;
  // PERMISSION_DENIED or UNAUTHENTICATED unless the caller holds the admin role.
  absl::Status RequireAdmin(const grpc::ServerContextBase& ctx) const;
  bool admin_configured() const { return !options_.admin_token.empty(); }

 private:
  const AuthOptions options_;
};

class PeerAuthenticator {
 public:
  // `tls`: the peer listener verifies certificates (mTLS). `peer_token`: without TLS, what
  // peers must present; both empty/false: peers are not authenticated (trusted network).
  PeerAuthenticator(bool tls, std::string peer_token);

  // OK when the connection is authenticated as node `claimed`.
  absl::Status Check(const grpc::ServerContextBase& ctx, uint64_t claimed) const;
  // Peers are authenticated by certificates naming them (not only by the shared token).
  bool certified() const { return tls_; }

 private:
  const bool tls_;
  const std::string peer_token_;
};

inline constexpr char kPeerTokenMetadata[] = "kv-peer-token";

}  // namespace kv::server
