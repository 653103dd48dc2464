#include "kv/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/channel.h"
#include "control/breaker_registry.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "sharding/key_codec.h"
#include "sharding/routing_map.h"

namespace kv {
namespace {

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::ABORTED;
}

absl::Status ToAbsl(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

v1::ReadConsistency ToProto(ReadConsistency c) {
  switch (c) {
    case ReadConsistency::kLinearizable:
      return v1::READ_LINEARIZABLE;
    case ReadConsistency::kLease:
      return v1::READ_LEASE;
    case ReadConsistency::kBoundedStaleness:
      return v1::READ_BOUNDED_STALENESS;
    case ReadConsistency::kSession:
      return v1::READ_SESSION;
    case ReadConsistency::kEventual:
      return v1::READ_EVENTUAL;
  }
  return v1::READ_LINEARIZABLE;
}

v1::WriteConsistency ToProto(WriteConsistency c) {
  return c == WriteConsistency::kAll ? v1::WRITE_ALL : v1::WRITE_MAJORITY;
}

KeyValue FromProto(const v1::KeyValue& kv) { return KeyValue{kv.key(), kv.value(), kv.version()}; }

std::string Metadata(const grpc::ClientContext& ctx, const char* name) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(name);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

struct Client::Impl {
  ClientOptions options;
  // One breaker per endpoint: a node that keeps failing is skipped until a probe succeeds.
  control::BreakerRegistry breakers{control::BreakerConfig{},
                                    [] { return absl::GetCurrentTimeNanos() / 1000; },
                                    static_cast<uint64_t>(absl::GetCurrentTimeNanos())};
  std::vector<std::unique_ptr<v1::KV::Stub>> stubs;
  std::atomic<size_t> current{0};
  uint64_t client_id = 0;

  absl::Mutex mu;
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 1;
  std::set<uint64_t> in_flight ABSL_GUARDED_BY(mu);
  std::mt19937_64 rng ABSL_GUARDED_BY(mu);
  // The session: the default keyspace's position (lock-free, the common case) and, once the
  // client used other keyspaces, one position per shard ("GROUP:INDEX" entries of the token).
  std::atomic<uint64_t> session_index{0};
  std::atomic<bool> has_shard_positions{false};
  mutable absl::Mutex session_mu;
  std::map<uint64_t, uint64_t> shard_positions ABSL_GUARDED_BY(session_mu);

  void ObserveDefaultIndex(uint64_t index) {
    uint64_t seen = session_index.load();
    while (index > seen && !session_index.compare_exchange_weak(seen, index)) {
    }
  }
  void ObserveToken(const std::string& token) {
    uint64_t index = 0;
    if (token.find_first_of(",:") == std::string::npos) {  // the default keyspace's: no lock
      if (absl::SimpleAtoi(token, &index)) ObserveDefaultIndex(index);
      return;
    }
    std::vector<std::string> entries = absl::StrSplit(token, ',');
    for (const std::string& entry : entries) {
      size_t colon = entry.find(':');
      if (colon == std::string::npos) {
        if (absl::SimpleAtoi(entry, &index)) ObserveDefaultIndex(index);
        continue;
      }
      uint64_t group = 0;
      if (!absl::SimpleAtoi(entry.substr(0, colon), &group) ||
          !absl::SimpleAtoi(entry.substr(colon + 1), &index)) {
        continue;
      }
      absl::MutexLock lock(&session_mu);
      uint64_t& at = shard_positions[group];
      at = std::max(at, index);
      // Bounded like the server's parser: the lowest group ids (the oldest shards) go first.
      while (shard_positions.size() > 63) shard_positions.erase(shard_positions.begin());
      has_shard_positions = true;
    }
  }
  std::string Token() const {
    uint64_t i = session_index.load();
    std::string token = i == 0 ? "" : absl::StrCat(i);
    if (!has_shard_positions.load()) return token;
    absl::MutexLock lock(&session_mu);
    for (const auto& [group, index] : shard_positions) {
      absl::StrAppend(&token, token.empty() ? "" : ",", group, ":", index);
    }
    return token;
  }

  v1::ReadOptions MakeRead(const ReadOptions& o) {
    v1::ReadOptions r;
    r.set_consistency(ToProto(o.consistency.value_or(options.read_consistency)));
    r.set_max_staleness_ms(static_cast<uint64_t>(
        absl::ToInt64Milliseconds(o.max_staleness.value_or(options.max_staleness))));
    r.set_session_token(Token());
    return r;
  }

  // Starts a write: assigns its sequence number. FinishWrite must follow.
  v1::WriteOptions BeginWrite(const WriteOptions& o) {
    v1::WriteOptions w;
    w.set_consistency(ToProto(o.consistency.value_or(options.write_consistency)));
    w.set_session_token(Token());
    absl::MutexLock lock(&mu);
    uint64_t seq = next_seq++;
    in_flight.insert(seq);
    auto* id = w.mutable_request_id();
    id->set_client_id(client_id);
    id->set_seq(seq);
    id->set_first_incomplete_seq(*in_flight.begin());
    return w;
  }
  void FinishWrite(const v1::WriteOptions& w) {
    absl::MutexLock lock(&mu);
    in_flight.erase(w.request_id().seq());
  }

  // Asynchronous calls in flight. The destructor waits for them, so a callback never runs
  // on a destroyed client, and a process that exits after its last callback fired does not
  // free a call's gRPC state while gRPC itself is being torn down.
  absl::Mutex async_mu;
  int async_in_flight ABSL_GUARDED_BY(async_mu) = 0;
  void AsyncStarted() {
    absl::MutexLock lock(&async_mu);
    ++async_in_flight;
  }
  // Runs the user's callback with the call's state already freed, then counts the call done:
  // nothing of the call is touched after `done` returns but this count.
  template <class Result>
  void AsyncEnded(std::function<void(Result)> done, Result result) {
    done(std::move(result));
    done = nullptr;
    absl::MutexLock lock(&async_mu);
    --async_in_flight;
  }
  void WaitForAsyncCalls() {
    absl::MutexLock lock(&async_mu);
    async_mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &async_in_flight));
  }

  absl::Duration Backoff(int attempt) {
    double max_ms = absl::ToDoubleMilliseconds(options.retry.initial_backoff) *
                    std::pow(options.retry.multiplier, attempt);
    max_ms = std::min(max_ms, absl::ToDoubleMilliseconds(options.retry.max_backoff));
    absl::MutexLock lock(&mu);
    // Full jitter: a uniform wait in [0, cap) keeps clients from retrying in lock-step.
    return absl::Milliseconds(std::uniform_real_distribution<double>(0, max_ms)(rng));
  }

  void Authorize(grpc::ClientContext* ctx) const {
    if (!options.auth_token.empty()) {
      ctx->AddMetadata("authorization", "Bearer " + options.auth_token);
    }
  }

  // The routing cache of the keyspace this client addresses (options.keyspace): the shards
  // responses and redirects told of, and their leaders' addresses, so that a request goes
  // straight to the leader of its key's shard. Updates only go forwards (sharding::RoutingMap).
  grpc::ChannelArguments channel_args;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  absl::Mutex route_mu;
  std::optional<sharding::Keyspace> keyspace ABSL_GUARDED_BY(route_mu);
  sharding::RoutingMap shards ABSL_GUARDED_BY(route_mu);
  std::map<uint64_t, std::string> shard_leader ABSL_GUARDED_BY(route_mu);
  std::map<std::string, std::unique_ptr<v1::KV::Stub>> stubs_by_address ABSL_GUARDED_BY(route_mu);

  // Returns whether the cache learned anything (a newer descriptor, or another leader).
  bool LearnShard(const v1::ShardHint& h) {
    if (h.shard_id() == 0 || options.keyspace.empty()) return false;
    absl::MutexLock lock(&route_mu);
    if (!keyspace) {
      keyspace.emplace();
      keyspace->id = h.keyspace_id();
      keyspace->strategy = static_cast<sharding::Strategy>(h.strategy());
    }
    sharding::ShardDescriptor d;
    d.shard_id = h.shard_id();
    d.keyspace_id = h.keyspace_id();
    d.span = {h.span_start(), h.span_end()};
    d.epoch = {h.generation(), h.conf_version()};
    bool learned = shards.Apply(d);
    std::string leader = !h.leader_address().empty()  ? h.leader_address()
                         : h.replica_addresses_size() ? h.replica_addresses(0)
                                                      : "";
    if (!leader.empty()) {
      std::string& known = shard_leader[h.shard_id()];
      learned = learned || known != leader;
      known = leader;
    }
    return learned;
  }
  // What the cache knows of `key`'s shard: the stub of its leader (nullptr when unknown) and
  // the route the request names, so the node can say how the cache is out of date.
  struct CachedRoute {
    v1::KV::Stub* stub = nullptr;
    v1::RouteHint hint;
  };
  CachedRoute RouteFor(const std::string& key) {
    CachedRoute out;
    if (options.keyspace.empty()) return out;
    absl::MutexLock lock(&route_mu);
    if (!keyspace) return out;
    const sharding::ShardDescriptor* d = shards.Lookup(sharding::EncodeKey(*keyspace, key));
    if (!d) return out;
    out.hint.set_shard_id(d->shard_id);
    out.hint.set_generation(d->epoch.generation);
    out.hint.set_conf_version(d->epoch.conf_version);
    auto leader = shard_leader.find(d->shard_id);
    if (leader == shard_leader.end()) return out;
    out.hint.set_to_leader(true);
    for (size_t i = 0; i < options.endpoints.size(); ++i) {
      if (options.endpoints[i] == leader->second) {
        out.stub = stubs[i].get();
        return out;
      }
    }
    auto& stub = stubs_by_address[leader->second];
    if (!stub) {
      stub = v1::KV::NewStub(grpc::CreateCustomChannel(leader->second, credentials, channel_args));
    }
    out.stub = stub.get();
    return out;
  }
  // Learns what an answer tells: the session token, and the shard that served it (or, for the
  // default keyspace, the leader).
  void LearnFrom(const v1::ResponseHeader& header) {
    ObserveToken(header.session_token());
    if (!header.has_shard()) return FollowLeader(header.leader_address());
    if (header.rerouted() != v1::Redirect::REASON_UNSPECIFIED) {
      reroutes.fetch_add(1, std::memory_order_relaxed);
    }
    LearnShard(header.shard());
  }
  // A typed redirect in a FAILED_PRECONDITION answer, learned from: true when it was one. A
  // redirect that teaches the cache nothing comes from a node that knows less than the cache
  // (its metadata is behind): the next attempt asks an endpoint instead, after a pause.
  bool FollowRedirect(const grpc::Status& s, const std::optional<std::string>& routing_key,
                      int attempt) {
    v1::Redirect redirect;
    if (s.error_code() != grpc::StatusCode::FAILED_PRECONDITION || s.error_details().empty() ||
        !redirect.ParseFromString(s.error_details()) || !redirect.has_shard()) {
      return false;
    }
    redirects.fetch_add(1, std::memory_order_relaxed);
    if (!LearnShard(redirect.shard()) && routing_key) {
      ForgetLeaderOf(*routing_key);
      absl::SleepFor(Backoff(attempt));
    }
    return true;
  }
  std::atomic<uint64_t> redirects{0}, reroutes{0};
  // For a single asynchronous attempt: authorizes and bounds `ctx`, names the cached route in
  // `route`, and returns the stub to send it on (the key's shard leader, else the endpoint).
  v1::KV::Stub* PrepareAsync(const std::string& key, std::optional<absl::Duration> timeout,
                             grpc::ClientContext* ctx, v1::RouteHint* route, bool read) {
    Authorize(ctx);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout.value_or(options.timeout)));
    CachedRoute cached = RouteFor(key);
    if (cached.hint.shard_id() != 0) *route = cached.hint;
    if (read && options.spread_reads) return stubs[NextReadEndpoint()].get();
    return cached.stub ? cached.stub : stubs[current.load() % stubs.size()].get();
  }
  // The endpoint for the next read under spread_reads: each in turn.
  size_t NextReadEndpoint() {
    return next_read.fetch_add(1, std::memory_order_relaxed) % stubs.size();
  }
  std::atomic<size_t> next_read{0};
  // A cached leader that did not answer is forgotten (the next request asks an endpoint).
  void ForgetLeaderOf(const std::string& key) {
    absl::MutexLock lock(&route_mu);
    if (!keyspace) return;
    if (const auto* d = shards.Lookup(sharding::EncodeKey(*keyspace, key))) {
      shard_leader.erase(d->shard_id);
    }
  }

  // Sends later requests straight to the leader when it is one of our endpoints (saves the
  // follower's forwarding hop).
  void FollowLeader(const std::string& leader) {
    if (leader.empty()) return;
    for (size_t i = 0; i < options.endpoints.size(); ++i) {
      if (options.endpoints[i] == leader) {
        current.store(i);
        return;
      }
    }
  }

  // After a transport failure, moves to the next endpoint (unless another call already did).
  void Failover(size_t failed) {
    size_t expected = failed;
    current.compare_exchange_strong(expected, (failed + 1) % stubs.size());
  }

  template <class Req>
  static std::optional<std::string> RoutingKeyOf(const Req& r) {
    return r.key();
  }
  static std::optional<std::string> RoutingKeyOf(const v1::ScanRequest& r) {
    if (!r.continuation_token().empty()) {
      // Format 1 holds the next user key; format 2 (hash keyspaces) an encoded position, which
      // the server routes.
      if (r.continuation_token()[0] != 1) return std::nullopt;
      return r.continuation_token().substr(1);
    }
    return r.prefix().empty() ? r.start() : r.prefix();
  }

  template <class Req, class Resp, class Method>
  absl::StatusOr<Resp> Call(Method method, const Req& req, std::optional<absl::Duration> timeout) {
    const std::optional<std::string> routing_key =
        options.keyspace.empty() ? std::nullopt : RoutingKeyOf(req);
    absl::Time deadline = absl::Now() + timeout.value_or(options.timeout);
    absl::Status last;
    // One attempt may use a third of the budget: a node that is alive but not answering
    // (stopped, partitioned) must not eat the whole deadline.
    absl::Duration per_attempt =
        std::max(absl::Milliseconds(300), timeout.value_or(options.timeout) / 3);
    constexpr bool kRead =
        std::is_same_v<Req, v1::GetRequest> || std::is_same_v<Req, v1::ScanRequest>;
    const bool spread = kRead && options.spread_reads;
    for (int attempt = 0; attempt < std::max(1, options.retry.max_attempts); ++attempt) {
      // Spread reads start at the next endpoint in turn; a retry moves on from there.
      size_t endpoint = spread ? NextReadEndpoint() : current.load() % stubs.size();
      // Skip endpoints whose breaker is open; if all are, try the current one anyway (the
      // caller asked for an answer, and it doubles as a probe).
      for (size_t k = 0; k < stubs.size(); ++k) {
        size_t candidate = (endpoint + k) % stubs.size();
        if (breakers.Allow(options.endpoints[candidate])) {
          endpoint = candidate;
          break;
        }
      }
      int64_t attempt_started = breakers.now();
      grpc::ClientContext ctx;
      Authorize(&ctx);
      absl::Time attempt_deadline = std::min(deadline, absl::Now() + per_attempt);
      ctx.set_deadline(absl::ToChronoTime(attempt_deadline));
      Resp resp;
      CachedRoute cached = routing_key ? RouteFor(*routing_key) : CachedRoute{};
      const Req* sent = &req;
      Req with_route;
      if (cached.hint.shard_id() != 0) {
        with_route = req;
        *with_route.mutable_route() = cached.hint;
        sent = &with_route;
      }
      v1::KV::Stub* routed = spread ? nullptr : cached.stub;
      grpc::Status s = ((routed ? routed : stubs[endpoint].get())->*method)(&ctx, *sent, &resp);
      if (FollowRedirect(s, routing_key, attempt)) continue;  // a typed redirect: go there
      if (routed && (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                     s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
        ForgetLeaderOf(*routing_key);
      }
      bool transport_failure = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                               s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      breakers.Record(options.endpoints[endpoint], !transport_failure,
                      breakers.now() - attempt_started);
      if (s.ok()) {
        LearnFrom(resp.header());
        return resp;
      }
      last = ToAbsl(s);
      bool attempt_timed_out =
          s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && absl::Now() < deadline;
      if (!Retryable(s.error_code()) && !attempt_timed_out) return last;
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE || attempt_timed_out) {
        Failover(endpoint);
      }
      absl::Duration wait = Backoff(attempt);
      int64_t hint_ms = 0;
      if (absl::SimpleAtoi(Metadata(ctx, "retry-after-ms"), &hint_ms)) {
        wait = std::max(wait, absl::Milliseconds(hint_ms));
      }
      if (absl::Now() + wait >= deadline) break;
      absl::SleepFor(wait);
    }
    return last;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
// Asynchronous calls still in flight refer to the client: wait for their callbacks to return.
Client::~Client() { impl_->WaitForAsyncCalls(); }

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("no endpoints given (host:port, comma-separated)");
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  auto impl = std::make_unique<Impl>();
  std::random_device rd;
  impl->rng.seed((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                 static_cast<uint64_t>(absl::GetCurrentTimeNanos()));
  do {
    impl->client_id = impl->rng();
  } while (impl->client_id == 0);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Notice a connection that went dead (a partition, a frozen node) within seconds rather than
  // at TCP's next retransmission, and do not let one connect attempt hang for gRPC's default 20 s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  ApplyTls(options.tls, &args);
  auto credentials = MakeChannelCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  for (const auto& endpoint : options.endpoints) {
    if (endpoint.empty() || endpoint.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("endpoint '", endpoint, "' is not host:port"));
    }
    impl->stubs.push_back(v1::KV::NewStub(grpc::CreateCustomChannel(endpoint, *credentials, args)));
  }
  impl->channel_args = args;
  impl->credentials = *credentials;
  impl->ObserveToken(options.session_token);
  impl->options = std::move(options);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

absl::StatusOr<KeyValue> Client::Get(const std::string& key, const ReadOptions& options) {
  v1::GetRequest req;
  req.set_key(key);
  req.set_keyspace(impl_->options.keyspace);
  *req.mutable_read() = impl_->MakeRead(options);
  auto resp =
      impl_->Call<v1::GetRequest, v1::GetResponse>(&v1::KV::Stub::Get, req, options.timeout);
  if (!resp.ok()) return resp.status();
  if (!resp->found()) return absl::NotFoundError(absl::StrCat("key not found"));
  return FromProto(resp->kv());
}

absl::StatusOr<WriteResult> Client::Put(const std::string& key, const std::string& value,
                                        const WriteOptions& options) {
  v1::PutRequest req;
  req.set_key(key);
  req.set_keyspace(impl_->options.keyspace);
  req.set_value(value);
  *req.mutable_write() = impl_->BeginWrite(options);
  auto resp =
      impl_->Call<v1::PutRequest, v1::PutResponse>(&v1::KV::Stub::Put, req, options.timeout);
  impl_->FinishWrite(req.write());
  if (!resp.ok()) return resp.status();
  return WriteResult{resp->version()};
}

absl::StatusOr<DeleteResult> Client::Delete(const std::string& key, const WriteOptions& options) {
  v1::DeleteRequest req;
  req.set_key(key);
  req.set_keyspace(impl_->options.keyspace);
  *req.mutable_write() = impl_->BeginWrite(options);
  auto resp = impl_->Call<v1::DeleteRequest, v1::DeleteResponse>(&v1::KV::Stub::Delete, req,
                                                                 options.timeout);
  impl_->FinishWrite(req.write());
  if (!resp.ok()) return resp.status();
  return DeleteResult{resp->version(), resp->existed()};
}

absl::StatusOr<CasResult> Client::CompareAndSwap(const std::string& key, uint64_t expected_version,
                                                 const std::string& value,
                                                 const WriteOptions& options) {
  v1::CompareAndSwapRequest req;
  req.set_key(key);
  req.set_keyspace(impl_->options.keyspace);
  req.set_value(value);
  if (expected_version == 0) {
    req.set_expect_absent(true);
  } else {
    req.set_expected_version(expected_version);
  }
  *req.mutable_write() = impl_->BeginWrite(options);
  auto resp = impl_->Call<v1::CompareAndSwapRequest, v1::CompareAndSwapResponse>(
      &v1::KV::Stub::CompareAndSwap, req, options.timeout);
  impl_->FinishWrite(req.write());
  if (!resp.ok()) return resp.status();
  CasResult result;
  result.succeeded = resp->succeeded();
  result.version = resp->version();
  if (resp->current_found()) result.current = FromProto(resp->current());
  return result;
}

absl::StatusOr<ScanPage> Client::Scan(const ScanRequest& request, const ReadOptions& options) {
  v1::ScanRequest req;
  req.set_start(request.start);
  req.set_end(request.end);
  req.set_prefix(request.prefix);
  req.set_limit(request.limit);
  req.set_continuation_token(request.continuation_token);
  req.set_keys_only(request.keys_only);
  req.set_keyspace(impl_->options.keyspace);
  *req.mutable_read() = impl_->MakeRead(options);
  auto resp =
      impl_->Call<v1::ScanRequest, v1::ScanResponse>(&v1::KV::Stub::Scan, req, options.timeout);
  if (!resp.ok()) return resp.status();
  ScanPage page;
  page.kvs.reserve(resp->kvs_size());
  for (const auto& kv : resp->kvs()) page.kvs.push_back(FromProto(kv));
  page.continuation_token = resp->continuation_token();
  return page;
}

absl::StatusOr<std::vector<KeyValue>> Client::ScanAll(ScanRequest request, size_t max_pairs,
                                                      const ReadOptions& options) {
  std::vector<KeyValue> out;
  while (out.size() < max_pairs) {
    auto page = Scan(request, options);
    if (!page.ok()) return page.status();
    for (auto& kv : page->kvs) {
      if (out.size() >= max_pairs) break;
      out.push_back(std::move(kv));
    }
    if (page->continuation_token.empty()) break;
    request.continuation_token = page->continuation_token;
  }
  return out;
}

namespace {

// Owns what one asynchronous call needs until gRPC calls back.
template <class Req, class Resp>
struct AsyncCall {
  grpc::ClientContext ctx;
  Req req;
  Resp resp;
};

}  // namespace

void Client::PutAsync(const std::string& key, const std::string& value,
                      std::function<void(absl::StatusOr<WriteResult>)> done,
                      const WriteOptions& options) {
  auto* call = new AsyncCall<v1::PutRequest, v1::PutResponse>();
  call->req.set_key(key);
  call->req.set_keyspace(impl_->options.keyspace);
  call->req.set_value(value);
  *call->req.mutable_write() = impl_->BeginWrite(options);
  impl_->AsyncStarted();
  impl_
      ->PrepareAsync(key, options.timeout, &call->ctx, call->req.mutable_route(),
                     /*read=*/false)
      ->async()
      ->Put(&call->ctx, &call->req, &call->resp,
            [this, call, done = std::move(done)](grpc::Status s) {
              std::unique_ptr<AsyncCall<v1::PutRequest, v1::PutResponse>> owned(call);
              impl_->FinishWrite(owned->req.write());
              absl::StatusOr<WriteResult> result = WriteResult{owned->resp.version()};
              if (s.ok()) {
                impl_->LearnFrom(owned->resp.header());
              } else {
                result = ToAbsl(s);
              }
              owned.reset();
              impl_->AsyncEnded(std::move(done), std::move(result));
            });
}

void Client::GetAsync(const std::string& key, std::function<void(absl::StatusOr<KeyValue>)> done,
                      const ReadOptions& options) {
  auto* call = new AsyncCall<v1::GetRequest, v1::GetResponse>();
  call->req.set_key(key);
  call->req.set_keyspace(impl_->options.keyspace);
  *call->req.mutable_read() = impl_->MakeRead(options);
  impl_->AsyncStarted();
  impl_
      ->PrepareAsync(key, options.timeout, &call->ctx, call->req.mutable_route(),
                     /*read=*/true)
      ->async()
      ->Get(&call->ctx, &call->req, &call->resp,
            [this, call, done = std::move(done)](grpc::Status s) {
              std::unique_ptr<AsyncCall<v1::GetRequest, v1::GetResponse>> owned(call);
              absl::StatusOr<KeyValue> result = absl::NotFoundError("key not found");
              if (!s.ok()) {
                result = ToAbsl(s);
              } else {
                impl_->LearnFrom(owned->resp.header());
                if (owned->resp.found()) result = FromProto(owned->resp.kv());
              }
              owned.reset();
              impl_->AsyncEnded(std::move(done), std::move(result));
            });
}

std::string Client::session_token() const { return impl_->Token(); }

RoutingStats Client::routing_stats() const {
  RoutingStats out;
  out.redirects = impl_->redirects.load(std::memory_order_relaxed);
  out.reroutes = impl_->reroutes.load(std::memory_order_relaxed);
  absl::MutexLock lock(&impl_->route_mu);
  out.cached_shards = impl_->shards.size();
  return out;
}

std::vector<EndpointBreaker> Client::EndpointBreakers() const {
  std::vector<EndpointBreaker> out;
  for (const auto& b : impl_->breakers.List()) {
    out.push_back(EndpointBreaker{b.name, control::BreakerStateName(b.state)});
  }
  return out;
}

}  // namespace kv
