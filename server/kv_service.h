// KvService: the `kvstore.v1.KV` gRPC service. A thin adapter: validate at the edge, find the
// replica of the key's shard (KeyRouter), hand writes to it, or wait for its read barrier and read
// its state machine, answer. Uses gRPC's callback
// API so that a request waiting for replication holds no thread.
#pragma once

#include "kvstore/v1/kv.grpc.pb.h"
#include "server/authenticator.h"
#include "server/control_state.h"
#include "server/key_router.h"
#include "server/replica.h"
#include "server/validation.h"

namespace kv::server {

class KvService final : public v1::KV::CallbackService {
 public:
  // `control` (optional) admits requests: kill switch, rate limits, in-flight cap.
  // `auth` (optional) names callers for per-client limits and refuses unknown tokens.
  KvService(const KeyRouter* router, RequestLimits limits, ControlState* control = nullptr,
            class Metrics* metrics = nullptr, const Authenticator* auth = nullptr,
            class ShardLoad* load = nullptr);

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const v1::PutRequest* req,
                                v1::PutResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* ctx, const v1::ScanRequest* req,
                                 v1::ScanResponse* resp) override;
  grpc::ServerUnaryReactor* CompareAndSwap(grpc::CallbackServerContext* ctx,
                                           const v1::CompareAndSwapRequest* req,
                                           v1::CompareAndSwapResponse* resp) override;

 private:
  void FillHeader(v1::ResponseHeader* header, const ShardRoute& route, uint64_t index) const;
  // Runs `write` through the route's replica; `fill` copies the outcome into the response.
  // A write or read whose shard no longer owns its key (it split) is sent again, to the key's
  // shard as this node now knows it, a few times at most.
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* ctx, const char* method,
                                  const std::string& keyspace, const std::string& key,
                                  RoutePtr route, internal::Command command,
                                  const v1::WriteOptions& options,
                                  std::function<void(const ShardRoute&, const WriteOutcome&)> fill);
  // Waits for the route's read barrier, then runs `read` on its state machine (which returns
  // the status to answer with).
  using ReadFn = std::function<absl::Status(const ShardRoute&, const KvStateMachine&)>;
  // `encoded`: `key` is an encoded position (a hash scan's), not a user key.
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* ctx, const char* method,
                                 const std::string& keyspace, const std::string& key, bool encoded,
                                 RoutePtr route, const v1::ReadOptions& options, ReadFn read);
  // A hash keyspace's scan: slot order, one shard per page at most.
  grpc::ServerUnaryReactor* ScanHash(grpc::CallbackServerContext* ctx, const v1::ScanRequest* req,
                                     v1::ScanResponse* resp, const sharding::Keyspace& ks);
  struct WriteCall;
  struct ReadCall;
  void Propose(std::shared_ptr<WriteCall> call);
  void Barrier(std::shared_ptr<ReadCall> call);
  // The key's route anew after OUT_OF_RANGE (the shard it reached gave the key away); a
  // retryable error when no other shard here owns it yet or it moved too often.
  absl::Status Reroute(const std::string& keyspace, const std::string& key, bool encoded,
                       RoutePtr* route, int* reroutes) const;

  // Admission; on refusal answers the call and returns false.
  bool Admit(grpc::CallbackServerContext* ctx, const std::string& method, bool is_write,
             grpc::ServerUnaryReactor** reactor);
  // Answers a request refused before admission (invalid, unauthenticated, over a limit, the
  // kill switch), counting it in kv_requests_total with its code.
  grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* ctx, const char* method,
                                   const absl::Status& status) const;
  // Answers an admitted request that cannot be routed.
  grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx, const char* method,
                                   const absl::Status& status);
  // An admitted request finished.
  void Done(const char* method, absl::Time started, const absl::Status& status) const;

  const KeyRouter* const router_;
  const RequestLimits limits_;
  ControlState* const control_;
  class Metrics* const metrics_;
  const Authenticator* const auth_;
  class ShardLoad* const load_;  // requests per keyspace shard, for splits by load
};

}  // namespace kv::server
