#include "server/kv_service.h"

#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "server/metrics.h"
#include "server/shard_splitter.h"

namespace kv::server {
namespace {

// A page stops growing at about this many bytes so it fits gRPC's 4 MiB message limit.
constexpr size_t kMaxScanPageBytes = 2 << 20;

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

internal::Command CommandHeader(const v1::WriteOptions& options) {
  internal::Command cmd;
  cmd.set_client_id(options.request_id().client_id());
  cmd.set_seq(options.request_id().seq());
  cmd.set_first_incomplete_seq(options.request_id().first_incomplete_seq());
  return cmd;
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

// Where a scan continues after the shard `scope` when its bounds go past the shard's end: the
// user key the next shard starts at; nullopt when the scan ends inside this shard. The shard's
// own span, not the route's: it may have split since the request was routed.
std::optional<std::string> NextShardStart(const ShardScope& scope, const std::string& end) {
  if (scope.span.end >= sharding::KeyspaceEnd(scope.keyspace.id)) return std::nullopt;
  auto next = sharding::DecodeKey(scope.keyspace, scope.span.end);
  if (!next.ok()) return std::nullopt;
  // A geo scan stays in its region: a region's end is not a key of the next region.
  if (scope.keyspace.strategy == sharding::Strategy::kGeo && !sharding::RegionOf(*next)) {
    return std::nullopt;
  }
  if (!end.empty() && std::string(*next) >= end) return std::nullopt;
  return std::string(*next);
}

void AddItems(std::vector<ScanItem> items, v1::ScanResponse* resp) {
  for (auto& item : items) {
    auto* kv = resp->add_kvs();
    kv->set_key(std::move(item.key));
    kv->set_value(std::move(item.value));
    kv->set_version(item.version);
  }
}

}  // namespace

KvService::KvService(const KeyRouter* router, RequestLimits limits, ControlState* control,
                     Metrics* metrics, const Authenticator* auth, ShardLoad* load)
    : router_(router),
      limits_(limits),
      control_(control),
      metrics_(metrics),
      auth_(auth),
      load_(load) {}

grpc::ServerUnaryReactor* KvService::Refuse(grpc::CallbackServerContext* ctx, const char* method,
                                            const absl::Status& status) {
  Done(method, absl::Now(), status);  // admitted, so it must be let go
  return FinishNow(ctx, status);
}

grpc::ServerUnaryReactor* KvService::Reject(grpc::CallbackServerContext* ctx, const char* method,
                                            const absl::Status& status) const {
  if (metrics_) metrics_->CountRefused(method, status.code());
  return FinishNow(ctx, status);
}

void KvService::Done(const char* method, absl::Time started, const absl::Status& status) const {
  if (control_) control_->Done();
  if (metrics_) {
    metrics_->ObserveRpc(method, status.code(), absl::ToDoubleSeconds(absl::Now() - started));
  }
}

bool KvService::Admit(grpc::CallbackServerContext* ctx, const std::string& method, bool is_write,
                      grpc::ServerUnaryReactor** reactor) {
  if (!control_) return true;
  std::string identity;
  // Who the caller is matters for per-client limits; a token, when presented, must be valid
  // whatever the limits. Otherwise the hot path does not look.
  bool limited = control_->per_client_limited();
  if (auth_ && (limited || ctx->client_metadata().count("authorization") > 0)) {
    auto caller = auth_->Identify(*ctx);
    if (!caller.ok()) {
      *reactor = Reject(ctx, method.c_str(), caller.status());
      return false;
    }
    if (limited) identity = caller->name;
  }
  int64_t retry_after_ms = 0;
  absl::Status s = control_->Admit(method, identity, is_write, &retry_after_ms);
  if (s.ok()) return true;
  if (retry_after_ms > 0)
    ctx->AddTrailingMetadata("retry-after-ms", std::to_string(retry_after_ms));
  *reactor = Reject(ctx, method.c_str(), s);
  return false;
}

void KvService::FillHeader(v1::ResponseHeader* header, const ShardRoute& route,
                           uint64_t index) const {
  header->set_session_token(MakeSessionToken(index, route.group_id));
  header->set_node_id(route.replica->node_id());
  header->set_leader_id(route.replica->leader_id());
  header->set_leader_address(route.replica->leader_address());
  if (route.hint.shard_id() != 0) {
    *header->mutable_shard() = route.hint;
    header->mutable_shard()->set_leader_address(header->leader_address());
    header->set_rerouted(route.rerouted);
  }
}

// A request in flight, with what it needs to be sent again to the key's shard when the shard it
// reached no longer owns the key (a split moved it): definitely not applied there, so safe.
struct KvService::WriteCall {
  grpc::ServerUnaryReactor* reactor;
  const char* method;
  absl::Time started, deadline;
  std::string keyspace, key;
  RoutePtr route;
  internal::Command command;
  v1::WriteConsistency level;
  std::function<void(const ShardRoute&, const WriteOutcome&)> fill;
  int reroutes = 0;
};
struct KvService::ReadCall {
  grpc::ServerUnaryReactor* reactor;
  const char* method;
  absl::Time started;
  std::string keyspace, key;
  bool encoded = false;
  RoutePtr route;
  v1::ReadOptions options;
  ReadRequirement requirement;
  ReadFn read;
  int reroutes = 0;
};

namespace {
constexpr int kMaxReroutes = 3;
}  // namespace

absl::Status KvService::Reroute(const std::string& keyspace, const std::string& key, bool encoded,
                                RoutePtr* route, int* reroutes) const {
  if (++*reroutes > kMaxReroutes) {
    return absl::UnavailableError("the key's shard kept moving; not applied; retry");
  }
  auto next = router_->Reroute(keyspace, key, encoded, **route);
  if (!next.ok()) return next.status();
  *route = *std::move(next);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvService::Write(
    grpc::CallbackServerContext* ctx, const char* method, const std::string& keyspace,
    const std::string& key, RoutePtr route, internal::Command command,
    const v1::WriteOptions& options,
    std::function<void(const ShardRoute&, const WriteOutcome&)> fill) {
  auto call = std::make_shared<WriteCall>();
  call->reactor = ctx->DefaultReactor();
  call->method = method;
  call->started = absl::Now();
  call->deadline = DeadlineOf(ctx);
  call->keyspace = keyspace;
  call->key = key;
  call->route = std::move(route);
  call->command = std::move(command);
  call->level = options.consistency() == v1::WRITE_CONSISTENCY_UNSPECIFIED ? v1::WRITE_MAJORITY
                                                                           : options.consistency();
  call->fill = std::move(fill);
  if (load_ && call->route->group_id != kDefaultDataGroupId) {
    load_->Record(call->route->group_id, sharding::EncodeKey(call->route->keyspace, key));
  }
  Propose(call);
  return call->reactor;
}

void KvService::Propose(std::shared_ptr<WriteCall> call) {
  Replica* replica = call->route->replica.get();
  replica->ProposeWrite(call->command, call->level, call->deadline,
                        [this, call](absl::StatusOr<WriteOutcome> outcome) {
                          if (absl::IsOutOfRange(outcome.status())) {
                            // Definitely not applied where it went: safe to send again, to the
                            // key's shard.
                            absl::Status moved = Reroute(call->keyspace, call->key, false,
                                                         &call->route, &call->reroutes);
                            if (moved.ok()) return Propose(call);
                            outcome = moved;
                          }
                          if (outcome.ok()) call->fill(*call->route, *outcome);
                          Done(call->method, call->started, outcome.status());
                          call->reactor->Finish(ToGrpcStatus(outcome.status()));
                        });
}

grpc::ServerUnaryReactor* KvService::Read(grpc::CallbackServerContext* ctx, const char* method,
                                          const std::string& keyspace, const std::string& key,
                                          bool encoded, RoutePtr route,
                                          const v1::ReadOptions& options, ReadFn read) {
  auto call = std::make_shared<ReadCall>();
  call->reactor = ctx->DefaultReactor();
  call->method = method;
  call->started = absl::Now();
  call->keyspace = keyspace;
  call->key = key;
  call->encoded = encoded;
  call->route = std::move(route);
  call->options = options;
  call->requirement.consistency = options.consistency() == v1::READ_CONSISTENCY_UNSPECIFIED
                                      ? v1::READ_LINEARIZABLE
                                      : options.consistency();
  call->requirement.max_staleness = absl::Milliseconds(options.max_staleness_ms());
  call->requirement.deadline = DeadlineOf(ctx);
  call->read = std::move(read);
  if (load_ && call->route->group_id != kDefaultDataGroupId) {
    load_->Record(call->route->group_id,
                  encoded ? key : sharding::EncodeKey(call->route->keyspace, key));
  }
  Barrier(call);
  return call->reactor;
}

void KvService::Barrier(std::shared_ptr<ReadCall> call) {
  // A token of another shard says nothing about this one.
  auto session = ParseSessionToken(call->options.session_token());
  call->requirement.min_index =
      session.ok() ? SessionIndexFor(*session, call->route->group_id, call->route->split_from,
                                     call->route->split_index)
                   : 0;
  Replica* replica = call->route->replica.get();
  replica->ReadBarrier(call->requirement, [this, call](absl::Status ready) {
    absl::Status s = ready;
    if (s.ok()) {
      // On the thread barriers complete on, where the replica cannot go away under the read.
      const KvStateMachine* sm = call->route->replica->state_machine();
      s = sm ? call->read(*call->route, *sm)
             : absl::UnavailableError("the shard's replica left this node; retry");
    }
    if (absl::IsOutOfRange(s)) {
      s = Reroute(call->keyspace, call->key, call->encoded, &call->route, &call->reroutes);
      if (s.ok()) return Barrier(call);
    }
    Done(call->method, call->started, s);
    call->reactor->Finish(ToGrpcStatus(s));
  });
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* ctx,
                                         const v1::GetRequest* req, v1::GetResponse* resp) {
  if (auto s = Validate(*req, limits_); !s.ok()) return Reject(ctx, "Get", s);
  grpc::ServerUnaryReactor* refused = nullptr;
  if (!Admit(ctx, "Get", false, &refused)) return refused;
  auto route = router_->Route(req->keyspace(), req->key(), req->route());
  if (!route.ok()) return Refuse(ctx, "Get", route.status());
  return Read(ctx, "Get", req->keyspace(), req->key(), false, *std::move(route), req->read(),
              [this, req, resp](const ShardRoute& r, const KvStateMachine& sm) -> absl::Status {
                auto value = sm.Get(req->key());
                if (!value.ok()) return value.status();
                // Taken after the read, so the token covers whatever the read saw (monotonic
                // reads).
                FillHeader(resp->mutable_header(), r, sm.read_token_index());
                resp->set_found(value->has_value());
                if (value->has_value()) {
                  resp->mutable_kv()->set_key(req->key());
                  resp->mutable_kv()->set_value(std::move((*value)->value));
                  resp->mutable_kv()->set_version((*value)->version);
                }
                return absl::OkStatus();
              });
}

grpc::ServerUnaryReactor* KvService::Scan(grpc::CallbackServerContext* ctx,
                                          const v1::ScanRequest* req, v1::ScanResponse* resp) {
  if (auto s = Validate(*req, limits_); !s.ok()) return Reject(ctx, "Scan", s);
  grpc::ServerUnaryReactor* refused = nullptr;
  if (!Admit(ctx, "Scan", false, &refused)) return refused;
  auto ks = router_->Resolve(req->keyspace());
  if (!ks.ok()) return Refuse(ctx, "Scan", ks.status());
  if (ks->strategy == sharding::Strategy::kHash) return ScanHash(ctx, req, resp, *ks);
  ScanBounds first = ResolveScanBounds(*req);
  auto route = router_->Route(req->keyspace(), first.start, req->route());
  if (!route.ok()) return Refuse(ctx, "Scan", route.status());
  return Read(
      ctx, "Scan", req->keyspace(), first.start, false, *std::move(route), req->read(),
      [this, req, resp](const ShardRoute& r, const KvStateMachine& sm) -> absl::Status {
        ScanBounds bounds = ResolveScanBounds(*req);
        // The shard split after routing and its start went with the other half.
        if (!sm.scope().span.Contains(sharding::EncodeKey(sm.scope().keyspace, bounds.start)) &&
            sm.scope().keyspace.strategy != sharding::Strategy::kHash) {
          return absl::OutOfRangeError("the scan's start left this shard; retry");
        }
        size_t limit = req->limit() == 0 ? limits_.default_scan_limit : req->limit();
        std::vector<ScanItem> items;
        bool more = false;
        auto s = sm.Scan(bounds.start, bounds.end, limit, kMaxScanPageBytes, req->keys_only(),
                         &items, &more);
        if (!s.ok()) return s;
        FillHeader(resp->mutable_header(), r, sm.read_token_index());
        AddItems(std::move(items), resp);
        if (more && !resp->kvs().empty()) {
          resp->set_continuation_token(MakeContinuationToken(resp->kvs().rbegin()->key()));
        } else if (auto next = NextShardStart(sm.scope(), bounds.end)) {
          // This shard is done and the scan goes on past its end: the next page starts
          // there (one shard per page; the token holds the next user key, never a shard
          // id).
          resp->set_continuation_token(MakeResumeToken(*next));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KvService::ScanHash(grpc::CallbackServerContext* ctx,
                                              const v1::ScanRequest* req, v1::ScanResponse* resp,
                                              const sharding::Keyspace& ks) {
  // Every key of a range is spread over all slots: the scan walks the keyspace in slot order,
  // shard after shard, keeping the keys inside the range; its token is the next position.
  std::string position =
      PositionOfToken(req->continuation_token()).value_or(sharding::KeyspaceBegin(ks.id));
  auto route = router_->RouteEncoded(req->keyspace(), position, req->route());
  if (!route.ok()) return Refuse(ctx, "Scan", route.status());
  return Read(
      ctx, "Scan", req->keyspace(), position, true, *std::move(route), req->read(),
      [this, req, resp, position](const ShardRoute& r, const KvStateMachine& sm) -> absl::Status {
        const ShardScope& scope = sm.scope();
        if (!scope.span.Contains(position)) {
          return absl::OutOfRangeError("the scan's position left this shard; retry");
        }
        ScanBounds bounds = ResolveScanBounds(*req);
        size_t limit = req->limit() == 0 ? limits_.default_scan_limit : req->limit();
        std::vector<ScanItem> items;
        bool more = false;
        std::string last;
        auto s = sm.ScanFrom(position, bounds.start, bounds.end, limit, kMaxScanPageBytes,
                             req->keys_only(), &items, &more, &last);
        if (!s.ok()) return s;
        FillHeader(resp->mutable_header(), r, sm.read_token_index());
        AddItems(std::move(items), resp);
        if (more) {
          last.push_back('\0');  // just after the last position looked at
          resp->set_continuation_token(MakePositionToken(last));
        } else if (scope.span.end < sharding::KeyspaceEnd(scope.keyspace.id)) {
          resp->set_continuation_token(MakePositionToken(scope.span.end));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KvService::Put(grpc::CallbackServerContext* ctx,
                                         const v1::PutRequest* req, v1::PutResponse* resp) {
  if (auto s = Validate(*req, limits_); !s.ok()) return Reject(ctx, "Put", s);
  grpc::ServerUnaryReactor* refused = nullptr;
  if (!Admit(ctx, "Put", true, &refused)) return refused;
  auto route = router_->Route(req->keyspace(), req->key(), req->route());
  if (!route.ok()) return Refuse(ctx, "Put", route.status());
  internal::Command cmd = CommandHeader(req->write());
  cmd.mutable_put()->set_key(req->key());
  cmd.mutable_put()->set_value(req->value());
  return Write(ctx, "Put", req->keyspace(), req->key(), *std::move(route), std::move(cmd),
               req->write(), [this, resp](const ShardRoute& r, const WriteOutcome& o) {
                 FillHeader(resp->mutable_header(), r, o.index);
                 resp->set_version(o.result.version());
               });
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* ctx,
                                            const v1::DeleteRequest* req,
                                            v1::DeleteResponse* resp) {
  if (auto s = Validate(*req, limits_); !s.ok()) return Reject(ctx, "Delete", s);
  grpc::ServerUnaryReactor* refused = nullptr;
  if (!Admit(ctx, "Delete", true, &refused)) return refused;
  auto route = router_->Route(req->keyspace(), req->key(), req->route());
  if (!route.ok()) return Refuse(ctx, "Delete", route.status());
  internal::Command cmd = CommandHeader(req->write());
  cmd.mutable_del()->set_key(req->key());
  return Write(ctx, "Delete", req->keyspace(), req->key(), *std::move(route), std::move(cmd),
               req->write(), [this, resp](const ShardRoute& r, const WriteOutcome& o) {
                 FillHeader(resp->mutable_header(), r, o.index);
                 resp->set_version(o.result.version());
                 resp->set_existed(o.result.existed());
               });
}

grpc::ServerUnaryReactor* KvService::CompareAndSwap(grpc::CallbackServerContext* ctx,
                                                    const v1::CompareAndSwapRequest* req,
                                                    v1::CompareAndSwapResponse* resp) {
  if (auto s = Validate(*req, limits_); !s.ok()) return Reject(ctx, "CompareAndSwap", s);
  grpc::ServerUnaryReactor* refused = nullptr;
  if (!Admit(ctx, "CompareAndSwap", true, &refused)) return refused;
  auto route = router_->Route(req->keyspace(), req->key(), req->route());
  if (!route.ok()) return Refuse(ctx, "CompareAndSwap", route.status());
  internal::Command cmd = CommandHeader(req->write());
  auto* cas = cmd.mutable_cas();
  cas->set_key(req->key());
  cas->set_value(req->value());
  if (req->expectation_case() == v1::CompareAndSwapRequest::kExpectAbsent) {
    cas->set_expect_absent(true);
  } else {
    cas->set_expected_version(req->expected_version());
  }
  std::string key = req->key();
  return Write(ctx, "CompareAndSwap", req->keyspace(), req->key(), *std::move(route),
               std::move(cmd), req->write(),
               [this, resp, key](const ShardRoute& r, const WriteOutcome& o) {
                 FillHeader(resp->mutable_header(), r, o.index);
                 resp->set_succeeded(o.result.succeeded());
                 resp->set_version(o.result.version());
                 if (!o.result.succeeded() && o.result.existed()) {
                   resp->set_current_found(true);
                   resp->mutable_current()->set_key(key);
                   resp->mutable_current()->set_value(o.result.current_value());
                   resp->mutable_current()->set_version(o.result.current_version());
                 }
               });
}

}  // namespace kv::server
