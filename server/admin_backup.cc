// AdminService::BackupShard: one shard's data, for `kvctl snapshot save`.
#include <fstream>
#include <future>

#include "absl/time/clock.h"
#include "server/admin_service.h"
#include "server/grpc_status.h"
#include "server/shard_backup.h"

namespace kv::server {

grpc::Status AdminService::BackupShard(grpc::ServerContext* ctx, const v1::BackupShardRequest* req,
                                       grpc::ServerWriter<v1::BackupShardChunk>* writer) {
  if (auto s = auth_->RequireAdmin(*ctx); !s.ok()) return ToGrpcStatus(s);
  // The read barrier takes at most a few round trips; the file can take longer to stream.
  std::promise<absl::StatusOr<RaftDriver::BackupSource>> opened;
  driver_->OpenBackup(req->shard_id(), absl::Now() + absl::Seconds(10),
                      [&opened](absl::StatusOr<RaftDriver::BackupSource> source) {
                        opened.set_value(std::move(source));
                      });
  auto source = opened.get_future().get();
  if (!source.ok()) return ToGrpcStatus(source.status());
  auto backup = ShardBackup::Write(driver_->engine(), *std::move(source));
  if (!backup.ok()) return ToGrpcStatus(backup.status());
  v1::BackupShardChunk first;
  *first.mutable_header() = (*backup)->header();
  if (!writer->Write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  std::ifstream in((*backup)->path(), std::ios::binary);
  std::string piece(1 << 20, '\0');
  uint64_t sent = 0;
  while (in) {
    in.read(piece.data(), static_cast<std::streamsize>(piece.size()));
    std::streamsize n = in.gcount();
    if (n <= 0) break;
    v1::BackupShardChunk chunk;
    chunk.set_data(piece.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    sent += static_cast<uint64_t>(n);
  }
  if (sent != (*backup)->header().sst_bytes()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "the backup file changed while it was sent");
  }
  return grpc::Status::OK;
}

}  // namespace kv::server
