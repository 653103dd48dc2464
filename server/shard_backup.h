// ShardBackup: one group's data for a backup, as an SST file of its `data` keys written from a
// snapshot stream (RaftDriver::OpenBackup), with a range tombstone over the group's span so that
// ingesting the file replaces the span. Exactly-once records are left out: they belong to the
// clients of the cluster the backup came from. The file is removed when the object dies.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kvstore/v1/admin.pb.h"
#include "server/raft_driver.h"
#include "storage/engine.h"

namespace kv::server {

class ShardBackup {
 public:
  // Writes the file under the engine's directory (beside the database, so no other disk fills).
  static absl::StatusOr<std::unique_ptr<ShardBackup>> Write(const storage::Engine* engine,
                                                            RaftDriver::BackupSource source);
  ~ShardBackup();
  const v1::ShardBackupHeader& header() const { return header_; }
  const std::string& path() const { return path_; }

 private:
  ShardBackup() = default;
  v1::ShardBackupHeader header_;
  std::string path_;
};

}  // namespace kv::server
