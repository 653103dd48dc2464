#include "server/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace kv::server {
namespace {

absl::Status CheckPemFile(const std::string& path, const std::string& flag) {
  std::ifstream f(path);
  if (!f) return absl::InvalidArgumentError(absl::StrCat("cannot read --", flag, " ", path));
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, " holds no PEM block (expected -----BEGIN ...)"));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::experimental::CertificateProviderInterface> Provider(const TlsFiles& f) {
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      f.key_file, f.cert_file, f.ca_file, kCertificateRefreshSeconds);
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files, const std::string& flag_prefix,
                           bool ca_required) {
  if (!files.enabled()) return absl::OkStatus();
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag_prefix, "-cert-file and --", flag_prefix, "-key-file go together"));
  }
  if (ca_required && files.ca_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag_prefix, "-ca-file is required (the CA that signs the other side)"));
  }
  if (auto s = CheckPemFile(files.cert_file, flag_prefix + "-cert-file"); !s.ok()) return s;
  if (auto s = CheckPemFile(files.key_file, flag_prefix + "-key-file"); !s.ok()) return s;
  if (!files.ca_file.empty()) return CheckPemFile(files.ca_file, flag_prefix + "-ca-file");
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsFiles& files,
                                                               bool require_client_cert) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  grpc::experimental::TlsServerCredentialsOptions options(Provider(files));
  options.watch_identity_key_cert_pairs();
  if (!files.ca_file.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(require_client_cert
                                      ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MakePeerChannelCredentials(const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(Provider(files));
  options.watch_identity_key_cert_pairs();
  options.watch_root_certs();
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  return grpc::experimental::TlsCredentials(options);
}

std::string PeerCertificateName(uint64_t node_id) { return absl::StrCat("node-", node_id); }

}  // namespace kv::server
