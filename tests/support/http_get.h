// Test support: a minimal HTTP/1.0 GET against 127.0.0.1 (Prometheus' query API, /metrics).
#pragma once

#include <string>

namespace kv::testing {

// The response body, or "" when the port does not answer.
std::string HttpGet(int port, const std::string& path);

}  // namespace kv::testing
