#include "server/restore.h"

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "kvstore/v1/admin.pb.h"
#include "server/logging.h"
#include "server/metadata.h"
#include "storage/backup_archive.h"
#include "storage/backup_file.h"
#include "storage/keys.h"

namespace kv::server {
namespace {

using storage::Column;

struct RestoredGroup {
  v1::ShardBackupHeader header;
  internal::GroupDescriptor descriptor;
};

absl::Status NotABackup(const std::string& path, std::string_view why) {
  return absl::DataLossError(absl::StrCat(
      path, " is not an intact kvstore backup (nothing was restored): ", std::string(why)));
}

// The group as the new cluster has it: every initial voter hosts it, at the first configuration.
internal::GroupDescriptor ForNewCluster(internal::GroupDescriptor d,
                                        const std::map<uint64_t, std::string>& voters) {
  d.clear_voters();
  d.clear_learners();
  for (const auto& [id, address] : voters) d.add_voters(id);
  d.mutable_epoch()->set_conf_version(1);
  d.clear_split_from();
  d.clear_split_index();
  return d;
}

// Checks the whole archive, unpacking its shard files into `dir`; the groups it holds, by id.
absl::StatusOr<std::map<uint64_t, RestoredGroup>> Unpack(const std::string& path,
                                                         const std::filesystem::path& dir) {
  auto manifest = storage::ReadBackup(path, dir.string());
  if (!manifest.ok()) return manifest.status();
  std::map<uint64_t, RestoredGroup> groups;
  for (const auto& f : manifest->files()) {
    uint64_t id = f.shard().shard_id();
    RestoredGroup g;
    g.header = f.shard();
    if (!g.descriptor.ParseFromString(f.shard().group_descriptor()) ||
        g.descriptor.group_id() != id) {
      return NotABackup(path, absl::StrCat("the descriptor of shard ", id, " does not parse"));
    }
    if (g.header.applied_index() == 0 || g.header.applied_term() == 0) {
      return NotABackup(path, absl::StrCat("shard ", id, " has no applied index"));
    }
    groups.emplace(id, std::move(g));
  }
  if (!groups.contains(kMetadataGroupId) || !groups.contains(kDefaultDataGroupId)) {
    return NotABackup(path, "the metadata group or the default keyspace's group is missing");
  }
  return groups;
}

// The metadata group's records, as the new cluster needs them: the old nodes' records dropped,
// every group descriptor naming the new voters (and only groups the backup holds).
absl::Status StageMetadataRewrite(const storage::Engine& engine, const std::string& path,
                                  const std::map<uint64_t, RestoredGroup>& groups,
                                  const std::map<uint64_t, std::string>& voters,
                                  storage::WriteBatch* batch) {
  std::string nodes = storage::DataKey(kSystemShardId, kNodeKeyPrefix);
  for (auto it = engine.NewIterator(Column::kData, nodes, storage::PrefixSuccessor(nodes));
       it->Valid(); it->Next()) {
    batch->Delete(Column::kData, it->key());
  }
  std::string prefix = storage::DataKey(kSystemShardId, kGroupKeyPrefix);
  auto it = engine.NewIterator(Column::kData, prefix, storage::PrefixSuccessor(prefix));
  for (; it->Valid(); it->Next()) {
    auto stored = storage::DecodeVersionedValue(it->value());
    if (!stored) return NotABackup(path, "a malformed metadata record");
    if (stored->value.empty()) continue;  // a removed group
    auto d = ParseGroupDescriptor(stored->value);
    if (!d.ok()) return NotABackup(path, std::string(d.status().message()));
    if (!groups.contains(d->group_id())) {
      return NotABackup(path, absl::StrCat("its metadata names shard ", d->group_id(),
                                           " but it holds no data for it"));
    }
    batch->Put(Column::kData, it->key(),
               storage::EncodeVersionedValue(stored->version,
                                             ForNewCluster(*d, voters).SerializeAsString()));
  }
  return it->status();
}

}  // namespace

absl::Status RestoreFromBackup(const RestoreOptions& o) {
  storage::Engine& engine = *o.engine;
  const std::string& path = o.backup_path;
  auto marker = engine.Get(Column::kMeta, storage::kRestoredKey);
  if (!marker.ok()) return marker.status();
  if (marker->has_value()) {
    logging::Info(
        "this data directory was restored from a backup (SHA-256 {}) before; "
        "--restore-from is ignored",
        **marker);
    return absl::OkStatus();
  }
  auto replicas = engine.NewIterator(Column::kMeta, storage::kReplicaPrefix,
                                     storage::PrefixSuccessor(storage::kReplicaPrefix));
  if (replicas->Valid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--restore-from seeds an empty data directory, and ", engine.path(),
        " already holds replicas: start without --restore-from, or from an empty directory"));
  }
  const auto& voters = o.driver->initial_voters;
  if (voters.empty() || voters.size() > static_cast<size_t>(kMaxReplicasPerGroup)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--restore-from needs 1 to ", kMaxReplicasPerGroup, " nodes in --peers (add more later)"));
  }
  auto file_sha = storage::Sha256OfFile(path);
  if (!file_sha.ok()) {
    return absl::NotFoundError(absl::StrCat("--restore-from: ", file_sha.status().message()));
  }
  std::filesystem::path dir = std::filesystem::path(engine.path()) / "restore";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  auto groups = Unpack(path, dir);
  if (!groups.ok()) {
    std::filesystem::remove_all(dir, ec);
    return groups.status();
  }

  std::vector<storage::IngestFile> files;
  uint64_t keys = 0;
  for (const auto& [id, g] : *groups) {
    files.push_back({Column::kData, (dir / storage::ShardFileName(id)).string()});
    keys += g.header.keys();
  }
  if (auto s = engine.Ingest(files); !s.ok()) return s;

  storage::WriteBatch batch(engine);
  if (auto s = StageMetadataRewrite(engine, path, *groups, voters, &batch); !s.ok()) return s;
  auto addresses = [&voters](uint64_t id) {
    auto it = voters.find(id);
    return it == voters.end() ? std::string() : it->second;
  };
  Store store(o.engine, o.driver, o.state_machines, addresses);
  for (const auto& [id, g] : *groups) {
    ReplicaOrigin origin;
    origin.kind = ReplicaOrigin::Kind::kSplit;  // a log that continues after data in place
    origin.index = g.header.applied_index();
    origin.term = g.header.applied_term();
    origin.clock_ms = g.header.clock_ms();
    if (auto s = store.StageCreate(ForNewCluster(g.descriptor, voters), origin, &batch); !s.ok()) {
      return s;
    }
  }
  batch.Put(Column::kMeta, storage::kRestoredKey, *file_sha);
  if (auto s = engine.Write(batch, true); !s.ok()) return s;
  std::filesystem::remove_all(dir, ec);
  logging::Info("restored {} shards ({} keys) from {} (SHA-256 {}); voters: {} nodes",
                groups->size(), keys, path, *file_sha, voters.size());
  return absl::OkStatus();
}

}  // namespace kv::server
