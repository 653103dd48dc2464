#include "server/shard_backup.h"

#include <atomic>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "storage/backup_archive.h"
#include "storage/keys.h"

namespace kv::server {

absl::StatusOr<std::unique_ptr<ShardBackup>> ShardBackup::Write(const storage::Engine* engine,
                                                                RaftDriver::BackupSource source) {
  static std::atomic<uint64_t> sequence{0};
  auto backup = std::unique_ptr<ShardBackup>(new ShardBackup());
  uint64_t group_id = source.descriptor.group_id();
  backup->path_ = (std::filesystem::path(engine->path()) /
                   absl::StrCat("backup-", group_id, "-", sequence.fetch_add(1), ".sst"))
                      .string();
  std::filesystem::remove(backup->path_);
  auto sst = engine->NewSstFile(storage::Column::kData, backup->path_);
  if (!sst.ok()) return sst.status();
  v1::ShardBackupHeader& h = backup->header_;
  h.set_shard_id(group_id);
  h.set_applied_index(source.meta.index());
  h.set_applied_term(source.meta.term());
  h.set_generation(source.descriptor.epoch().generation());
  h.set_group_descriptor(source.descriptor.SerializeAsString());
  std::string chunk, pending;
  bool more = true;
  while (more) {
    auto next = source.source->Next(1 << 20, &chunk);
    if (!next.ok()) return next.status();
    more = *next;
    pending.append(chunk);
    size_t used = 0;
    while (auto r = PeekSnapshotRecord(std::string_view(pending).substr(used))) {
      used += r->size;
      absl::Status s;
      if (r->column == kClockColumn && r->value.size() == 8) {
        h.set_clock_ms(storage::ReadBigEndian64(r->value));
      } else if (r->column == kSpanColumn) {
        s = (*sst)->DeleteRange(r->key, r->value);
      } else if (r->column == kDataColumn) {
        s = (*sst)->Put(r->key, r->value);
        h.set_keys(h.keys() + 1);
      }
      if (!s.ok()) return s;
    }
    pending.erase(0, used);
  }
  if (!pending.empty()) return absl::InternalError("a snapshot stream ends inside a record");
  if (auto s = (*sst)->Finish(); !s.ok()) return s;
  std::error_code ec;
  h.set_sst_bytes(std::filesystem::file_size(backup->path_, ec));
  if (ec) return absl::InternalError(absl::StrCat("backup file: ", ec.message()));
  auto sha = storage::Sha256OfFile(backup->path_);
  if (!sha.ok()) return sha.status();
  h.set_sst_sha256(*sha);
  return backup;
}

ShardBackup::~ShardBackup() {
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

}  // namespace kv::server
