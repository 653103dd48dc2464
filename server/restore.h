// Restore: seeds an empty data directory from a backup (`kvctl snapshot save`) at kvd's first
// start with --restore-from. Every node of the new cluster restores the same file and ends up
// with identical replicas of every group in it: each group's data ingested from its SST file,
// its log starting after the backup's applied index (as a split child's does, so versions keep
// growing past every restored one), its clock carried over, and the nodes given by --peers as
// its voters. The metadata group's records are rewritten to match: node records of the old
// cluster dropped (the new nodes register themselves), group descriptors naming the new voters.
//
// Nothing is written until the whole file checked out (every member's SHA-256 against the
// manifest, the manifest against its own digest); a truncated, corrupted or foreign file is
// refused with a message naming what is wrong. Data first, then the replicas in one batch with
// the marker: a crash in between leaves a directory the same command restores again.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "server/driver_options.h"
#include "server/store.h"
#include "storage/engine.h"

namespace kv::server {

struct RestoreOptions {
  std::string backup_path;
  storage::Engine* engine = nullptr;
  const DriverOptions* driver = nullptr;  // node id and initial voters
  Store::StateMachineFactory state_machines;
};

// OK when the directory was seeded now, or had been seeded by an earlier restore (the flag is
// then ignored); FAILED_PRECONDITION when it holds replicas of its own; DATA_LOSS for a file
// that is not a whole, intact backup.
absl::Status RestoreFromBackup(const RestoreOptions& options);

}  // namespace kv::server
