#include "server/authenticator.h"

#include <grpcpp/security/auth_context.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/tls_credentials.h"

namespace kv::server {
namespace {

constexpr char kIdentityHeader[] = "kv-client-identity";
constexpr size_t kMaxIdentityBytes = 128;

std::string Metadata(const grpc::ServerContextBase& ctx, const char* name) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(name);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// Names a verified client certificate carries: SAN entries, then the common name.
std::vector<std::string> CertificateNames(const grpc::ServerContextBase& ctx) {
  std::vector<std::string> names;
  auto auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return names;
  for (const char* property : {"x509_subject_alternative_name", "x509_common_name"}) {
    for (const auto& v : auth->FindPropertyValues(property)) names.emplace_back(v.data(), v.size());
  }
  return names;
}

// "ipv4:127.0.0.1:5000" -> "127.0.0.1": one bucket per host, not per connection.
std::string PeerHost(const grpc::ServerContextBase& ctx) {
  std::string peer = ctx.peer();
  size_t colon = peer.rfind(':');
  size_t scheme = peer.find(':');
  if (colon == std::string::npos || scheme == colon) return peer;
  return peer.substr(scheme + 1, colon - scheme - 1);
}

}  // namespace

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  // Length is not secret (tokens are fixed-length random strings); the content is.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  }
  return diff == 0;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseClientTokens(
    const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (parts.size() != 2 || parts[0].size() > kMaxIdentityBytes || parts[1].size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--client-tokens-file line ", line_no,
          ": expected `NAME TOKEN` (name up to 128 bytes, token of at least 16 characters)"));
    }
    if (parts[0] == kAdminName) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--client-tokens-file line ", line_no,
          ": the name `admin` is reserved (the admin token comes from --admin-token-file)"));
    }
    out.emplace_back(std::string(parts[1]), std::string(parts[0]));
  }
  return out;
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag) {
  std::ifstream f(path);
  if (!f) return absl::FailedPreconditionError(absl::StrCat("cannot read --", flag, " ", path));
  std::string secret;
  std::getline(f, secret);
  secret = std::string(absl::StripAsciiWhitespace(secret));
  if (secret.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("--", flag, " ", path, " is empty"));
  }
  return secret;
}

Authenticator::Authenticator(AuthOptions options) : options_(std::move(options)) {}

absl::StatusOr<Caller> Authenticator::Identify(const grpc::ServerContextBase& ctx) const {
  Caller caller;
  std::vector<std::string> names = CertificateNames(ctx);
  for (const auto& n : names) caller.admin = caller.admin || n == kAdminName;
  if (!names.empty()) caller.name = caller.admin ? kAdminName : names.front();
  std::string authorization = Metadata(ctx, "authorization");
  if (!authorization.empty()) {
    constexpr absl::string_view kBearer = "Bearer ";
    if (!absl::StartsWith(authorization, kBearer)) {
      return absl::UnauthenticatedError("authorization metadata must be `Bearer TOKEN`");
    }
    std::string token = authorization.substr(kBearer.size());
    const std::string* match = nullptr;
    for (const auto& [known, name] : options_.client_tokens) {
      if (ConstantTimeEquals(token, known)) match = &name;
    }
    if (!options_.admin_token.empty() && ConstantTimeEquals(token, options_.admin_token)) {
      caller.admin = true;
      if (caller.name.empty()) caller.name = kAdminName;
    } else if (match) {
      if (caller.name.empty()) caller.name = *match;
    } else {
      return absl::UnauthenticatedError(
          "unknown token (kvctl --admin-token-file / KVCTL_ADMIN_TOKEN, or a client token "
          "listed in kvd --client-tokens-file)");
    }
  }
  if (!caller.name.empty()) return caller;
  if (options_.trust_identity_header) {
    std::string declared = Metadata(ctx, kIdentityHeader);
    if (!declared.empty() && declared.size() <= kMaxIdentityBytes && declared != kAdminName) {
      return Caller{declared, false};
    }
  }
  return Caller{PeerHost(ctx), false};
}

absl::Status Authenticator::RequireAdmin(const grpc::ServerContextBase& ctx) const {
  auto caller = Identify(ctx);
  if (!caller.ok()) return caller.status();
  if (caller->admin) return absl::OkStatus();
  if (options_.admin_token.empty()) {
    return absl::PermissionDeniedError(
        "this call needs the admin role: a client certificate named `admin`, or the admin token "
        "(none is configured on this node: kvd --admin-token-file)");
  }
  return absl::UnauthenticatedError(
      "this call needs the admin role: missing admin token (kvctl --admin-token-file or "
      "KVCTL_ADMIN_TOKEN) or a client certificate named `admin`");
}

PeerAuthenticator::PeerAuthenticator(bool tls, std::string peer_token)
    : tls_(tls), peer_token_(std::move(peer_token)) {}

absl::Status PeerAuthenticator::Check(const grpc::ServerContextBase& ctx, uint64_t claimed) const {
  if (claimed == 0) return absl::InvalidArgumentError("peer message without a sender node id");
  if (tls_) {
    std::string want = PeerCertificateName(claimed);
    for (const auto& n : CertificateNames(ctx)) {
      if (n == want) return absl::OkStatus();
    }
    return absl::PermissionDeniedError(absl::StrCat("peer claims to be node ", claimed,
                                                    " but its certificate does not name ", want));
  }
  if (!peer_token_.empty()) {
    if (ConstantTimeEquals(Metadata(ctx, kPeerTokenMetadata), peer_token_)) return absl::OkStatus();
    return absl::UnauthenticatedError("missing or wrong peer token (kvd --peer-token-file)");
  }
  return absl::OkStatus();
}

}  // namespace kv::server
