// AdminClient::SaveSnapshot: every shard's BackupShard stream into one archive.
#include <algorithm>
#include <map>
#include <set>

#include "client/admin_impl.h"
#include "storage/backup_archive.h"

namespace kv {
namespace {

// Groups 0 and 1 (the metadata group and the default keyspace's) never split.
constexpr uint64_t kFirstSplittableGroup = 2;
constexpr int kAttempts = 3;

// Where to ask for a group: its leader first (when the answering node knew it), then its other
// voters, then every configured endpoint.
std::vector<std::string> EndpointsFor(const GroupInfo& g,
                                      const std::map<uint64_t, std::string>& clients,
                                      const std::vector<std::string>& configured) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& e) {
    if (!e.empty() && std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  };
  if (auto it = clients.find(g.leader_id); it != clients.end()) add(it->second);
  for (uint64_t v : g.voters) {
    if (auto it = clients.find(v); it != clients.end()) add(it->second);
  }
  for (const auto& e : configured) add(e);
  return out;
}

}  // namespace

absl::StatusOr<SnapshotSummary> AdminClient::SaveSnapshot(
    const std::string& path, std::function<void(const SnapshotProgress&)> progress) {
  absl::Status last = absl::AbortedError("no attempt made");
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    auto before = ListGroups();
    if (!before.ok()) return before.status();
    auto nodes = ListNodes();
    if (!nodes.ok()) return nodes.status();
    std::map<uint64_t, std::string> clients;
    for (const auto& n : *nodes) clients[n.id] = n.client_address;
    auto writer = storage::ArchiveWriter::Create(path);
    if (!writer.ok()) return writer.status();

    v1::BackupManifest manifest;
    manifest.set_format(1);
    manifest.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
    SnapshotProgress p;
    p.shards_total = before->size();
    bool moved = false;  // a shard split or changed while saved: start over
    for (const auto& g : *before) {
      absl::Status shard_status =
          absl::UnavailableError(absl::StrCat("no node that hosts shard ", g.id, " answered"));
      bool begun = false;
      v1::ShardBackupHeader header;
      for (const auto& endpoint : EndpointsFor(g, clients, impl_->endpoints)) {
        auto stub = impl_->StubFor(endpoint);
        grpc::ClientContext ctx;
        impl_->Prepare(&ctx, absl::Now() + std::max(impl_->timeout, absl::Minutes(30)));
        v1::BackupShardRequest req;
        req.set_shard_id(g.id);
        auto reader = stub->BackupShard(&ctx, req);
        v1::BackupShardChunk chunk;
        absl::Status s;
        while (s.ok() && reader->Read(&chunk)) {
          if (chunk.has_header()) {
            header = chunk.header();
            s = (*writer)->BeginMember(storage::ShardFileName(g.id), header.sst_bytes());
            begun = s.ok();
          } else if (!begun) {
            s = absl::InternalError("a backup stream without its header");
          } else {
            s = (*writer)->Append(chunk.data());
          }
        }
        if (!s.ok()) ctx.TryCancel();
        grpc::Status finished = reader->Finish();
        if (s.ok()) s = ToAbsl(finished);
        if (s.ok() && !begun) s = absl::InternalError("an empty backup stream");
        if (s.ok()) {
          auto sha = (*writer)->EndMember();
          s = sha.ok() ? absl::OkStatus() : sha.status();
          if (s.ok() && *sha != header.sst_sha256()) {
            s = absl::DataLossError(absl::StrCat("shard ", g.id, " arrived damaged (SHA-256)"));
          }
        }
        shard_status = s;
        // Once bytes of the shard are in the file, another node cannot take over this attempt.
        if (s.ok() || begun) break;
        if (s.code() == absl::StatusCode::kPermissionDenied ||
            s.code() == absl::StatusCode::kUnauthenticated) {
          return s;
        }
      }
      if (!shard_status.ok()) {
        if (!begun) return shard_status;
        last = shard_status;
        moved = true;
        break;
      }
      if (g.id >= kFirstSplittableGroup && header.generation() != g.generation) {
        last = absl::AbortedError(absl::StrCat("shard ", g.id, " split while it was saved"));
        moved = true;
        break;
      }
      auto* file = manifest.add_files();
      file->set_name(storage::ShardFileName(g.id));
      *file->mutable_shard() = header;
      ++p.shards_done;
      p.shard_id = g.id;
      p.keys += header.keys();
      p.bytes += header.sst_bytes();
      if (progress) progress(p);
    }
    if (moved) continue;
    auto after = ListGroups();
    if (!after.ok()) return after.status();
    auto epochs = [](const std::vector<GroupInfo>& gs) {
      std::set<std::pair<uint64_t, uint64_t>> out;
      for (const auto& g : gs) out.insert({g.id, g.generation});
      return out;
    };
    if (epochs(*after) != epochs(*before)) {
      last = absl::AbortedError("shards were created, removed or split during the save");
      continue;
    }
    std::string manifest_bytes = manifest.SerializeAsString();
    if (auto s = (*writer)->BeginMember(storage::kManifestName, manifest_bytes.size()); !s.ok()) {
      return s;
    }
    if (auto s = (*writer)->Append(manifest_bytes); !s.ok()) return s;
    auto manifest_sha = (*writer)->EndMember();
    if (!manifest_sha.ok()) return manifest_sha.status();
    std::string digest = *manifest_sha + "\n";
    if (auto s = (*writer)->BeginMember(storage::kManifestDigestName, digest.size()); !s.ok()) {
      return s;
    }
    if (auto s = (*writer)->Append(digest); !s.ok()) return s;
    if (auto s = (*writer)->EndMember(); !s.ok()) return s.status();
    auto sha = (*writer)->Finish();
    if (!sha.ok()) return sha.status();
    uint64_t bytes = (*writer)->bytes_written();
    SnapshotSummary summary;
    summary.path = path;
    summary.shards = static_cast<size_t>(manifest.files_size());
    summary.keys = p.keys;
    summary.bytes = bytes;
    summary.sha256 = *sha;
    summary.attempts = attempt;
    return summary;
  }
  return absl::AbortedError(
      absl::StrCat("no consistent backup in ", kAttempts, " attempts: ", last.message()));
}

}  // namespace kv
