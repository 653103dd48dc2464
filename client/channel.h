// Channels to kvd for the client library and kvctl: plain text, or TLS from kv::TlsOptions.
// Internal to the library (not installed).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kv/tls.h"

namespace kv {

// Reads the PEM files once; fails with a message naming the flag/file that is wrong.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsOptions& tls);

// Adds what TLS needs to the channel arguments (the server name override).
void ApplyTls(const TlsOptions& tls, grpc::ChannelArguments* args);

}  // namespace kv
