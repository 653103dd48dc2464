// TLS settings for connections to kvd, shared by kv::Client and kv::AdminClient (kvctl's
// --cacert, --cert and --key, the names etcdctl uses).
#pragma once

#include <string>

namespace kv {

struct TlsOptions {
  // PEM CA bundle that signed the servers' certificates. Set it (or cert_file) to use TLS.
  std::string ca_file;
  // PEM client certificate and key, for servers that want one (mTLS); the certificate's name is
  // the caller's identity for rate limits and audit, `admin` holds the admin role.
  std::string cert_file;
  std::string key_file;
  // Name the server certificate must carry, when it differs from the endpoint's host.
  std::string server_name;
  bool enabled() const { return !ca_file.empty() || !cert_file.empty() || !key_file.empty(); }
};

}  // namespace kv
