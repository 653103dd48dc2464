// Tokens and small texts from outside: session and continuation tokens, client token files,
// --peers lists and addresses. Each must parse or be refused, never crash.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/authenticator.h"
#include "server/node_config.h"
#include "server/validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)kv::server::ParseSessionToken(text);
  kv::v1::ScanRequest scan;
  scan.set_start("a");
  scan.set_end("z");
  scan.set_continuation_token(text);
  if (kv::server::Validate(scan, kv::server::RequestLimits{}).ok()) {
    auto bounds = kv::server::ResolveScanBounds(scan);
    if (bounds.start < "a" || bounds.start > "z") std::abort();  // token stays in its range
  }
  (void)kv::server::ParseClientTokens(text);
  auto peers = kv::server::ParsePeers(text);
  if (peers.ok()) {
    for (const auto& [id, address] : *peers) {
      if (id == 0 || !kv::server::ValidateAddress(address, "peer").ok()) std::abort();
    }
  }
  (void)kv::server::ValidateAddress(text, "address");
  return 0;
}
