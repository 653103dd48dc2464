// AdminClient's state, shared by the files that implement it (admin.cc, admin_snapshot.cc).
#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/channel.h"
#include "kv/admin.h"
#include "kvstore/v1/admin.grpc.pb.h"

namespace kv {

inline absl::Status ToAbsl(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

struct AdminClient::Impl {
  std::vector<std::string> endpoints;
  absl::Duration timeout;
  std::string admin_token;
  TlsOptions tls;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::vector<std::unique_ptr<v1::Admin::Stub>> stubs;

  std::unique_ptr<v1::Admin::Stub> StubFor(const std::string& address) {
    grpc::ChannelArguments args;
    ApplyTls(tls, &args);
    return v1::Admin::NewStub(grpc::CreateCustomChannel(address, credentials, args));
  }

  void Prepare(grpc::ClientContext* ctx, absl::Time deadline) const {
    ctx->set_deadline(absl::ToChronoTime(deadline));
    if (!admin_token.empty()) ctx->AddMetadata("authorization", "Bearer " + admin_token);
  }

  // The leader's address, from whichever endpoint knows it.
  absl::StatusOr<std::string> FindLeader() {
    for (auto& stub : stubs) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
      v1::ClusterStatusResponse resp;
      if (!stub->ClusterStatus(&ctx, {}, &resp).ok() || resp.leader_id() == 0) continue;
      for (const auto& m : resp.members()) {
        // The leader's client address: the admin service is not on the peer port.
        if (m.id() == resp.leader_id() && !m.client_address().empty()) return m.client_address();
      }
    }
    return absl::UnavailableError("no endpoint knows a leader (is a quorum up?)");
  }

  template <class Req, class Resp, class Method>
  absl::StatusOr<Resp> OnLeader(Method method, const Req& req) {
    absl::Time deadline = absl::Now() + timeout;
    absl::Status last = absl::UnavailableError("no leader");
    // The leader can change under us; a few attempts follow it.
    for (int attempt = 0; attempt < 5 && absl::Now() < deadline; ++attempt) {
      auto leader = FindLeader();
      if (!leader.ok()) {
        last = leader.status();
        absl::SleepFor(absl::Milliseconds(200));
        continue;
      }
      auto stub = StubFor(*leader);
      grpc::ClientContext ctx;
      Prepare(&ctx, deadline);
      Resp resp;
      grpc::Status s = (stub.get()->*method)(&ctx, req, &resp);
      if (s.ok()) return resp;
      last = ToAbsl(s);
      bool leader_moved = s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
                          s.error_message().find("not the leader") != std::string::npos;
      if (!leader_moved && s.error_code() != grpc::StatusCode::UNAVAILABLE) return last;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return last;
  }

  // The first endpoint that answers (any node serves topology calls).
  template <class Req, class Resp, class Method>
  absl::StatusOr<Resp> OnAnyNode(Method method, const Req& req) {
    absl::Status last = absl::UnavailableError("no endpoint answered");
    for (auto& stub : stubs) {
      grpc::ClientContext ctx;
      Prepare(&ctx, absl::Now() + timeout);
      Resp resp;
      grpc::Status s = (stub.get()->*method)(&ctx, req, &resp);
      if (s.ok()) return resp;
      last = ToAbsl(s);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return last;
      }
    }
    return last;
  }

  // On the leader of a shard, which only the shard's replicas know: every endpoint is asked,
  // and a refusal that names the leader ("its leader is node N at ADDR") sends the call there.
  // UNAVAILABLE (a leadership hand-over, an election) is retried until `total` has passed.
  template <class Req, class Resp, class Method>
  absl::StatusOr<Resp> OnShardLeader(Method method, const Req& req, absl::Duration total) {
    absl::Time deadline = absl::Now() + total;
    absl::Status last = absl::UnavailableError("no endpoint answered");
    while (absl::Now() < deadline) {
      std::vector<std::string> targets = endpoints;
      for (size_t i = 0; i < targets.size() && i < 16; ++i) {
        auto stub = StubFor(targets[i]);
        grpc::ClientContext ctx;
        Prepare(&ctx, deadline);
        Resp resp;
        grpc::Status s = (stub.get()->*method)(&ctx, req, &resp);
        if (s.ok()) return resp;
        last = ToAbsl(s);
        const std::string& msg = s.error_message();
        // Sent on: to the leader it names, or to a replica a node without one names.
        size_t named = msg.find("its leader is node ");
        if (named == std::string::npos) named = msg.find("ask one of its replicas: node ");
        size_t at = msg.rfind(" at ");
        if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION && named != std::string::npos &&
            at != std::string::npos && at > named) {
          std::string leader = msg.substr(at + 4);
          if (!leader.empty() &&
              std::find(targets.begin(), targets.end(), leader) == targets.end()) {
            targets.push_back(leader);
          }
          continue;
        }
        bool elsewhere = s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
                         msg.find("has no replica") != std::string::npos;
        if (!elsewhere && s.error_code() != grpc::StatusCode::UNAVAILABLE &&
            s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
          return last;
        }
      }
      absl::SleepFor(absl::Milliseconds(300));
    }
    return last;
  }

  // Promote or remove: same request, same answer (the index of the change in the data group).
  using MemberMethod = grpc::Status (v1::Admin::Stub::*)(grpc::ClientContext*,
                                                         const v1::MemberRequest&,
                                                         v1::MembershipResponse*);
  absl::StatusOr<uint64_t> ChangeMember(MemberMethod method, uint64_t node_id) {
    v1::MemberRequest req;
    req.set_node_id(node_id);
    auto r = OnLeader<v1::MemberRequest, v1::MembershipResponse>(method, req);
    if (!r.ok()) return r.status();
    return r->index();
  }
};

}  // namespace kv
