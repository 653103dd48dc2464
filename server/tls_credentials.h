// gRPC credentials for kvd's listeners and its channels to peers, built from PEM files an
// operator makes with openssl. Certificates are watched: gRPC re-reads the files every
// kCertificateRefreshSeconds, so a rotated certificate (write the new files, then rename them
// over the old ones) takes effect on new connections without a restart.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace kv::server {

inline constexpr unsigned kCertificateRefreshSeconds = 5;

struct TlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// Refuses an incomplete set (cert without key, mTLS without a CA) and files that cannot be read
// or hold no PEM block, naming the flag (`flag_prefix` is "tls" or "peer-tls").
absl::Status CheckTlsFiles(const TlsFiles& files, const std::string& flag_prefix, bool ca_required);

// Plain text when `files` is empty. With a CA file, client certificates signed by it are
// verified when presented (and give the caller its identity); `require_client_cert` refuses
// connections without one.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsFiles& files,
                                                               bool require_client_cert);

// Channel to a peer: presents this node's certificate and accepts only a server certificate
// signed by the cluster CA that names the expected node (`node-N` in its SAN; the channel's
// target name is overridden with it, see PeerTargetName).
std::shared_ptr<grpc::ChannelCredentials> MakePeerChannelCredentials(const TlsFiles& files);

// The name a node's peer certificate must carry: "node-<id>".
std::string PeerCertificateName(uint64_t node_id);

}  // namespace kv::server
