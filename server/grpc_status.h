// Conversion of absl::Status to grpc::Status at the edge of the server.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace kv::server {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace kv::server
