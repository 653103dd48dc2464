#include "server/node_identity.h"

#include "absl/strings/str_cat.h"
#include "kvstore/v1/internal.pb.h"
#include "storage/keys.h"

namespace kv::server {

absl::Status CheckOrStampIdentity(storage::Engine* engine, uint64_t node_id, uint64_t cluster_id) {
  auto stored = engine->Get(storage::Column::kMeta, storage::kIdentityKey);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) {
    internal::NodeIdentity id;
    id.set_node_id(node_id);
    id.set_cluster_id(cluster_id);
    id.set_format_version(kDataFormatVersion);
    storage::WriteBatch batch(*engine);
    batch.Put(storage::Column::kMeta, storage::kIdentityKey, id.SerializeAsString());
    return engine->Write(batch, /*sync=*/true);
  }
  internal::NodeIdentity id;
  if (!id.ParseFromString(**stored) || id.node_id() == 0) {
    return absl::DataLossError(
        absl::StrCat("the identity record in ", engine->path(), " is corrupted"));
  }
  if (id.format_version() != kDataFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", engine->path(), " has format version ", id.format_version(),
                     "; this kvd reads version ", kDataFormatVersion));
  }
  if (id.node_id() != node_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", engine->path(), " belongs to node ", id.node_id(), ", not node ",
        node_id, "; pass --node-id=", id.node_id(), " or use another --data-dir"));
  }
  if (cluster_id != 0 && id.cluster_id() != cluster_id) {
    return absl::FailedPreconditionError(absl::StrCat("data directory ", engine->path(),
                                                      " belongs to cluster ", id.cluster_id(),
                                                      ", not cluster ", cluster_id));
  }
  return absl::OkStatus();
}

}  // namespace kv::server
