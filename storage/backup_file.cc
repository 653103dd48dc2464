#include "storage/backup_file.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/backup_archive.h"

namespace kv::storage {
namespace {

absl::Status NotABackup(const std::string& path, const std::string& why) {
  return absl::DataLossError(absl::StrCat(path, " is not an intact kvstore backup: ", why));
}

// Writes one archive member to `path` and fsyncs it; returns its SHA-256.
absl::StatusOr<std::string> Extract(ArchiveReader& reader, const std::string& path) {
  std::FILE* out = std::fopen(path.c_str(), "wb");
  if (!out) return absl::InternalError(absl::StrCat("cannot create ", path));
  auto sha = reader.Read([&](std::string_view piece) {
    if (std::fwrite(piece.data(), 1, piece.size(), out) != piece.size()) {
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
    return absl::OkStatus();
  });
  bool synced = std::fflush(out) == 0 && ::fsync(fileno(out)) == 0;
  std::fclose(out);
  if (sha.ok() && !synced) return absl::InternalError(absl::StrCat("cannot sync ", path));
  return sha;
}

}  // namespace

absl::StatusOr<v1::BackupManifest> ReadBackup(const std::string& path,
                                              const std::string& unpack_dir) {
  auto reader = ArchiveReader::Open(path);
  if (!reader.ok()) return reader.status();
  std::map<std::string, std::string> digests;  // member name -> SHA-256
  std::string manifest_bytes, manifest_digest;
  for (;;) {
    auto member = (*reader)->Next();
    if (!member.ok()) return member.status();
    if (!*member) break;
    const std::string name = (*member)->name;
    if (digests.contains(name)) return NotABackup(path, name + " appears twice");
    absl::StatusOr<std::string> sha;
    if (name == kManifestName || name == kManifestDigestName) {
      if ((*member)->size > (64u << 20)) return NotABackup(path, name + " is too large");
      std::string* into = name == kManifestName ? &manifest_bytes : &manifest_digest;
      sha = (*reader)->Read([into](std::string_view piece) {
        into->append(piece);
        return absl::OkStatus();
      });
    } else if (absl::StartsWith(name, "shard-") && absl::EndsWith(name, ".sst") &&
               name.find('/') == std::string::npos) {
      sha = unpack_dir.empty()
                ? (*reader)->Read([](std::string_view) { return absl::OkStatus(); })
                : Extract(**reader, (std::filesystem::path(unpack_dir) / name).string());
    } else {
      return NotABackup(path, "it holds a file named '" + name + "'");
    }
    if (!sha.ok()) return sha.status();
    digests[name] = *sha;
  }
  std::string manifest_name(kManifestName);
  if (!digests.contains(manifest_name) || !digests.contains(std::string(kManifestDigestName))) {
    return NotABackup(path, "its manifest is missing (a truncated file?)");
  }
  if (absl::StripAsciiWhitespace(manifest_digest) != digests[manifest_name]) {
    return NotABackup(path, "the manifest does not match its SHA-256");
  }
  v1::BackupManifest manifest;
  if (!manifest.ParseFromString(manifest_bytes)) {
    return NotABackup(path, "its manifest does not parse");
  }
  if (manifest.format() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is a backup of format ", manifest.format(), "; this build reads format 1"));
  }
  for (const auto& f : manifest.files()) {
    if (f.name() != ShardFileName(f.shard().shard_id())) {
      return NotABackup(path, absl::StrCat("the manifest names '", f.name(), "' for shard ",
                                           f.shard().shard_id()));
    }
    auto found = digests.find(f.name());
    if (found == digests.end()) return NotABackup(path, f.name() + " is missing");
    if (found->second != f.shard().sst_sha256()) {
      return NotABackup(path, f.name() + " is corrupted (its SHA-256 differs from the manifest's)");
    }
  }
  if (digests.size() != static_cast<size_t>(manifest.files_size()) + 2) {
    return NotABackup(path, "it holds files its manifest does not name, or one twice");
  }
  return manifest;
}

}  // namespace kv::storage
