// A whole backup file (storage/backup_archive.h: the archive; v1::BackupManifest: what it
// holds), read and checked: every shard file's SHA-256 against the manifest, the manifest
// against its own digest, and no file missing, repeated or unnamed. Used by kvd --restore-from
// (which unpacks the shard files) and kvctl snapshot status (which only checks).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "kvstore/v1/admin.pb.h"

namespace kv::storage {

// `unpack_dir` empty: check only; otherwise each shard file is also written (and fsynced) there
// under its own name. DATA_LOSS names what is wrong with a damaged, truncated or foreign file.
absl::StatusOr<v1::BackupManifest> ReadBackup(const std::string& path,
                                              const std::string& unpack_dir = "");

}  // namespace kv::storage
