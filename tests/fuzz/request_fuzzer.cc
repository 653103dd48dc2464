// Edge validation of every client and control request: any bytes that parse as a request must
// validate to OK or INVALID_ARGUMENT, and a valid scan must resolve to a well-formed range.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kvstore/v1/control.pb.h"
#include "kvstore/v1/kv.pb.h"
#include "server/validation.h"

namespace {

template <class Request>
void Check(const std::string& bytes) {
  Request r;
  if (!r.ParseFromString(bytes)) return;
  absl::Status s = kv::server::Validate(r, kv::server::RequestLimits{});
  if (!s.ok() && s.code() != absl::StatusCode::kInvalidArgument) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      Check<kv::v1::GetRequest>(bytes);
      break;
    case 1:
      Check<kv::v1::PutRequest>(bytes);
      break;
    case 2:
      Check<kv::v1::DeleteRequest>(bytes);
      break;
    case 3:
      Check<kv::v1::CompareAndSwapRequest>(bytes);
      break;
    case 4: {
      kv::v1::ScanRequest r;
      if (!r.ParseFromString(bytes)) break;
      if (!kv::server::Validate(r, kv::server::RequestLimits{}).ok()) break;
      auto bounds = kv::server::ResolveScanBounds(r);
      if (!bounds.end.empty() && bounds.start > bounds.end) std::abort();
      (void)kv::server::MakeContinuationToken(bounds.start);
      break;
    }
    case 5: {
      kv::v1::LimitsConfig l;
      if (l.ParseFromString(bytes)) (void)kv::server::ValidateLimits(l);
      break;
    }
    case 6: {
      kv::v1::EngageKillSwitchRequest e;
      if (e.ParseFromString(bytes)) (void)kv::server::ValidateReason(e.reason());
      (void)kv::server::ValidateReason(bytes);
      break;
    }
  }
  return 0;
}
