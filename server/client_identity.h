// Who a request comes from, for rate limits and audit records: the `kv-client-identity`
// metadata the client sent, else the connection's peer address.
#pragma once

#include <grpcpp/server_context.h>

#include <string>

namespace kv::server {

inline std::string ClientIdentity(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  if (auto it = md.find("kv-client-identity"); it != md.end()) {
    return std::string(it->second.data(), it->second.size());
  }
  return ctx.peer();
}

}  // namespace kv::server
