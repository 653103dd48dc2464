// The identity a data directory belongs to. The first start stamps it; every later start checks
// it, so a node never serves another node's data (or a directory from an incompatible version).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "storage/engine.h"

namespace kv::server {

// 2: exactly-once state is one ClientSessionRecord per client (1 had a record per command).
inline constexpr uint32_t kDataFormatVersion = 2;

// Stamps an empty directory with (node_id, cluster_id); on a stamped one, fails with
// FAILED_PRECONDITION if either differs, or DATA_LOSS if the record is unreadable.
// cluster_id 0 means "accept the stored one" (single-node mode).
absl::Status CheckOrStampIdentity(storage::Engine* engine, uint64_t node_id, uint64_t cluster_id);

}  // namespace kv::server
