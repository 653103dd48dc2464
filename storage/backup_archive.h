// The file format of backups (`kvctl snapshot save`, `kvd --restore-from`): a POSIX tar (ustar)
// archive, so that standard tools list and unpack it (`tar tvf`), of regular files only. kvstore
// puts one RocksDB SST file per shard in it and, last, a manifest naming each file's SHA-256.
//
// ArchiveWriter writes to PATH.partial and renames it to PATH once finished and fsynced, so a
// backup that stops half-way never leaves a file that looks whole. ArchiveReader reports a
// truncated archive or a damaged header as DataLoss. SHA-256 digests are lowercase hex.
// Neither class is thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kv::storage {

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  std::string HexDigest();  // once; the object is then spent

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};
// SHA-256 of a whole file.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

// A backup's members, in order: one SST file per shard, then the manifest (a v1::BackupManifest
// naming each file with its header and SHA-256), then the manifest's own SHA-256 (hex).
std::string ShardFileName(uint64_t shard_id);
inline constexpr std::string_view kManifestName = "MANIFEST";
inline constexpr std::string_view kManifestDigestName = "MANIFEST.sha256";

// The largest member a ustar header can describe (11 octal digits).
inline constexpr uint64_t kMaxArchiveMemberBytes = (1ull << 33) - 1;

class ArchiveWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ArchiveWriter>> Create(const std::string& path);
  ~ArchiveWriter();  // without Finish: removes PATH.partial
  // A member of exactly `size` bytes, given by Append calls, then EndMember.
  absl::Status BeginMember(std::string_view name, uint64_t size);
  absl::Status Append(std::string_view data);
  // The member's SHA-256.
  absl::StatusOr<std::string> EndMember();
  // Ends the archive, fsyncs it and renames it into place; returns the whole file's SHA-256
  // (what `sha256sum PATH` prints).
  absl::StatusOr<std::string> Finish();
  uint64_t bytes_written() const { return offset_; }

 private:
  ArchiveWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status Write(std::string_view data);
  std::string path_;
  std::FILE* file_;
  Sha256 file_sha_;
  std::unique_ptr<Sha256> member_sha_;
  uint64_t offset_ = 0;
  uint64_t member_left_ = 0, member_size_ = 0;
  bool finished_ = false;
};

class ArchiveReader {
 public:
  struct Member {
    std::string name;
    uint64_t size = 0;
  };
  static absl::StatusOr<std::unique_ptr<ArchiveReader>> Open(const std::string& path);
  ~ArchiveReader();
  // The next member's header; nullopt at the archive's end marker.
  absl::StatusOr<std::optional<Member>> Next();
  // The current member's bytes, in pieces, to `sink`; returns their SHA-256. Call once per
  // member, after Next (a member not read is skipped by the next call to Next).
  absl::StatusOr<std::string> Read(const std::function<absl::Status(std::string_view)>& sink);

 private:
  ArchiveReader(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status ReadExactly(size_t n, std::string* out);
  std::string path_;
  std::FILE* file_;
  std::optional<Member> current_;
  bool current_read_ = false;
};

}  // namespace kv::storage
