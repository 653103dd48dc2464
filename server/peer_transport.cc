#include "server/peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "server/authenticator.h"
#include "server/logging.h"
#include "server/tls_credentials.h"

namespace kv::server {
namespace {

constexpr size_t kSnapshotChunkBytes = 1 << 20;
// Bound on messages waiting for a slow peer; older ones are dropped (Raft retransmits).
constexpr size_t kMaxQueuedMessages = 4096;
constexpr absl::Duration kSendTimeout = absl::Seconds(2);

}  // namespace

PeerTransport::PeerTransport(PeerTransportOptions options,
                             std::function<std::string(uint64_t)> resolve,
                             control::BreakerRegistry* breakers)
    : options_(std::move(options)),
      cluster_id_(options_.cluster_id),
      self_id_(options_.self_id),
      resolve_(std::move(resolve)),
      breakers_(breakers) {}

void PeerTransport::Authenticate(grpc::ClientContext* ctx) const {
  if (!options_.peer_token.empty()) ctx->AddMetadata(kPeerTokenMetadata, options_.peer_token);
}

PeerTransport::~PeerTransport() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    // Outstanding callbacks touch this object: wait for them (each is bounded by a deadline).
    mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &in_flight_calls_));
    threads.swap(snapshot_threads_);
  }
  for (auto& t : threads) t.join();
}

PeerTransport::Peer* PeerTransport::PeerFor(uint64_t id) {
  std::string address = resolve_(id);
  if (address.empty()) return nullptr;
  auto& peer = peers_[id];
  if (!peer || peer->address != address) {
    peer = std::make_unique<Peer>();
    peer->address = address;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // After a partition heals, a connection whose packets were dropped recovers only at TCP's
    // next retransmission (seconds later, doubling each time), and a connect attempt whose SYN
    // was dropped waits 20 s by default. Pings every second find a dead connection within two,
    // and a connect attempt gives up after one, so peers hear each other again within about a
    // heartbeat of the heal.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
    // The server must prove it is the node we mean, not just any holder of a cluster
    // certificate: its certificate names node-N.
    if (options_.name_peers_by_certificate) {
      args.SetSslTargetNameOverride(PeerCertificateName(id));
    }
    auto credentials =
        options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials();
    peer->channel = grpc::CreateCustomChannel(address, credentials, args);
    peer->stub = raftpb::RaftTransport::NewStub(peer->channel);
  }
  return peer.get();
}

void PeerTransport::Send(std::vector<raftpb::Message> messages) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  std::map<uint64_t, Peer*> touched;
  for (auto& m : messages) {
    uint64_t to = m.to();
    Peer* peer = PeerFor(to);
    if (!peer) continue;
    peer->queue.push_back(std::move(m));
    touched[to] = peer;
  }
  for (auto& [id, peer] : touched) {
    if (peer->queue.size() > kMaxQueuedMessages) {
      peer->queue.erase(
          peer->queue.begin(),
          peer->queue.begin() + static_cast<long>(peer->queue.size() - kMaxQueuedMessages));
    }
    if (!peer->in_flight) Flush(id, peer);
  }
}

void PeerTransport::Flush(uint64_t id, Peer* peer) {
  if (peer->queue.empty() || stopping_) return;
  std::string breaker = "peer-" + std::to_string(id);
  if (breakers_ && !breakers_->Allow(breaker)) {
    peer->queue.clear();  // the peer looks dead: do not pile up calls; Raft resends later
    return;
  }
  struct Call {
    grpc::ClientContext ctx;
    raftpb::MessageBatch batch;
    raftpb::BatchAck ack;
  };
  auto* call = new Call();
  call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + kSendTimeout));
  Authenticate(&call->ctx);
  call->batch.set_cluster_id(cluster_id_);
  call->batch.set_from_node(self_id_);
  call->batch.set_from_client_address(options_.self_client_address);
  for (auto& m : peer->queue) *call->batch.add_messages() = std::move(m);
  peer->queue.clear();
  peer->in_flight = true;
  ++in_flight_calls_;
  int64_t started = breakers_ ? breakers_->now() : 0;
  peer->stub->async()->Send(&call->ctx, &call->batch, &call->ack,
                            [this, id, call, breaker, started](grpc::Status s) {
                              delete call;
                              if (breakers_) {
                                breakers_->Record(breaker, s.ok(), breakers_->now() - started);
                              }
                              absl::MutexLock lock(&mu_);
                              --in_flight_calls_;
                              auto it = peers_.find(id);
                              if (it == peers_.end()) return;
                              it->second->in_flight = false;
                              ExplainRefusal(id, *it->second, s);
                              Flush(id, it->second.get());
                            });
}

void PeerTransport::ExplainRefusal(uint64_t id, Peer& peer, const grpc::Status& s) {
  // Misconfigurations answer at once and forever; say what they mean, once a minute per peer.
  bool misconfigured = s.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
                       s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                       s.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                       s.error_code() == grpc::StatusCode::FAILED_PRECONDITION;
  absl::Time now = absl::Now();
  if (!misconfigured || now - peer.last_explained < absl::Minutes(1)) return;
  peer.last_explained = now;
  const char* hint = s.error_code() == grpc::StatusCode::UNIMPLEMENTED
                         ? " (it does not serve the peer API: is that its --listen address "
                           "instead of its --peer-listen?)"
                         : "";
  std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
  logging::Warning("node {} at {} refuses this node's Raft traffic: {} {}{}", id, peer.address,
                   code, s.error_message(), hint);
}

void PeerTransport::SendSnapshot(raftpb::Message message, std::unique_ptr<SnapshotSource> source,
                                 std::function<void(bool)> done) {
  // A snapshot to a peer whose breaker is open would only time out, chunk after chunk.
  std::string breaker = "peer-" + std::to_string(message.to());
  if (breakers_ && !breakers_->Allow(breaker)) {
    done(false);
    return;
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  Peer* peer = PeerFor(message.to());
  if (!peer) {
    done(false);
    return;
  }
  auto channel = peer->channel;
  uint64_t cluster = cluster_id_, self = self_id_;
  std::string token = options_.peer_token;
  control::BreakerRegistry* breakers = breakers_;
  // The source reads the engine snapshot a chunk at a time: no copy of the whole state here.
  snapshot_threads_.emplace_back([channel, cluster, self, token, breakers, breaker,
                                  message = std::move(message), source = std::move(source),
                                  done = std::move(done)] {
    auto stub = raftpb::RaftTransport::NewStub(channel);
    uint64_t id = static_cast<uint64_t>(absl::GetCurrentTimeNanos());
    size_t offset = 0;
    bool ok = true, more = true;
    std::string data;
    while (ok && more) {
      auto next = source->Next(kSnapshotChunkBytes, &data);
      if (!next.ok()) {
        ok = false;
        break;
      }
      more = *next;
      raftpb::SnapshotChunk chunk;
      chunk.set_cluster_id(cluster);
      chunk.set_from_node(self);
      chunk.set_group_id(message.group_id());
      chunk.set_snapshot_id(id);
      chunk.set_offset(offset);
      offset += data.size();
      chunk.set_data(std::move(data));
      if (!more) {
        chunk.set_last(true);
        *chunk.mutable_message() = message;
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      if (!token.empty()) ctx.AddMetadata(kPeerTokenMetadata, token);
      raftpb::SnapshotAck ack;
      int64_t started = breakers ? breakers->now() : 0;
      ok = stub->SendSnapshot(&ctx, chunk, &ack).ok();
      if (breakers) breakers->Record(breaker, ok, breakers->now() - started);
      data.clear();
    }
    done(ok);
  });
}

void PeerTransport::Forward(uint64_t to, raftpb::ForwardRequest request, absl::Time deadline,
                            ForwardDone done) {
  struct Call {
    grpc::ClientContext ctx;
    raftpb::ForwardRequest req;
    raftpb::ForwardResponse resp;
  };
  std::string breaker = "forward-" + std::to_string(to);
  if (breakers_ && !breakers_->Allow(breaker)) {
    done(absl::UnavailableError(absl::StrCat("circuit breaker ", breaker, " is open; retry")));
    return;
  }
  absl::MutexLock lock(&mu_);
  Peer* peer = stopping_ ? nullptr : PeerFor(to);
  if (!peer) {
    done(absl::UnavailableError("leader address unknown"));
    return;
  }
  auto* call = new Call();
  call->req = std::move(request);
  call->req.set_cluster_id(cluster_id_);
  call->req.set_from_node(self_id_);
  call->ctx.set_deadline(absl::ToChronoTime(deadline));
  Authenticate(&call->ctx);
  ++in_flight_calls_;
  int64_t started = breakers_ ? breakers_->now() : 0;
  peer->stub->async()->Forward(
      &call->ctx, &call->req, &call->resp,
      [this, call, to, breaker, started, done = std::move(done)](grpc::Status s) {
        if (breakers_) {
          // Only transport failures count against the leader.
          bool failed = s.error_code() == grpc::StatusCode::UNAVAILABLE;
          breakers_->Record(breaker, !failed, breakers_->now() - started);
        }
        if (s.ok()) {
          done(std::move(call->resp));
        } else {
          done(absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                            absl::StrCat("forwarded to leader ", to, ": ", s.error_message())));
        }
        delete call;
        absl::MutexLock lock(&mu_);
        --in_flight_calls_;
      });
}

}  // namespace kv::server
