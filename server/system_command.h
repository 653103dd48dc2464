// Proposing a command to the metadata group from a service thread: retried while the group has
// no leader (an election, a restart), and answered once the command is applied on this node, so
// that a read of this node's view right after shows its effect. Blocks the calling thread; for
// rare calls (settings, metadata), never on the data path.
#pragma once

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvstore/v1/internal.pb.h"
#include "server/replica.h"

namespace kv::server {

absl::StatusOr<WriteOutcome> ProposeSystemCommand(Replica* metadata_group,
                                                  const internal::Command& command,
                                                  absl::Time deadline);
// The same without waiting for this node to apply it: answered once applied on the leader (a
// shard's own command, such as a split, proposed through any replica).
absl::StatusOr<WriteOutcome> ProposeWithRetry(
    Replica* replica, const internal::Command& command, absl::Time deadline,
    v1::WriteConsistency consistency = v1::WRITE_MAJORITY);

}  // namespace kv::server
