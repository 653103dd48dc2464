// ControlService: kv.v1.Control on the control listener (its own gRPC server and threads, so it
// answers while the data plane is saturated or halted). Reads need nothing; changes (breaker
// overrides, limits, kill switch) need the admin role (token or certificate), and limits and the
// kill switch are written to the replicated system keyspace through Raft (from any node: forwarded
// to the leader).
#pragma once

#include <string>

#include "control/breaker_registry.h"
#include "kvstore/v1/control.grpc.pb.h"
#include "server/authenticator.h"
#include "server/control_state.h"
#include "server/health_monitor.h"
#include "server/replica.h"

namespace kv::server {

class ControlService final : public v1::Control::Service {
 public:
  ControlService(Replica* replica, ControlState* control, HealthMonitor* health,
                 control::BreakerRegistry* breakers, const Authenticator* auth, uint64_t node_id);

  grpc::Status Health(grpc::ServerContext* ctx, const v1::HealthReportRequest* req,
                      v1::HealthReport* resp) override;
  grpc::Status ListBreakers(grpc::ServerContext* ctx, const v1::ListBreakersRequest* req,
                            v1::ListBreakersResponse* resp) override;
  grpc::Status SetBreaker(grpc::ServerContext* ctx, const v1::SetBreakerRequest* req,
                          v1::Breaker* resp) override;
  grpc::Status GetLimits(grpc::ServerContext* ctx, const v1::GetLimitsRequest* req,
                         v1::LimitsConfig* resp) override;
  grpc::Status SetLimits(grpc::ServerContext* ctx, const v1::LimitsConfig* req,
                         v1::LimitsConfig* resp) override;
  grpc::Status EngageKillSwitch(grpc::ServerContext* ctx, const v1::EngageKillSwitchRequest* req,
                                v1::KillSwitchState* resp) override;
  grpc::Status ReleaseKillSwitch(grpc::ServerContext* ctx, const v1::ReleaseKillSwitchRequest* req,
                                 v1::KillSwitchState* resp) override;
  grpc::Status GetKillSwitch(grpc::ServerContext* ctx, const v1::GetKillSwitchRequest* req,
                             v1::KillSwitchState* resp) override;

 private:
  grpc::Status CheckAdmin(const grpc::ServerContext* ctx) const;
  // Writes a system key through Raft and waits until it is applied here.
  grpc::Status WriteSystem(grpc::ServerContext* ctx, const std::string& key,
                           const std::string& value);
  grpc::Status ChangeKillSwitch(grpc::ServerContext* ctx, v1::KillSwitchMode mode,
                                const std::string& reason, v1::KillSwitchState* resp);

  Replica* const replica_;
  ControlState* const control_;
  HealthMonitor* const health_;
  control::BreakerRegistry* const breakers_;
  const Authenticator* const auth_;
  const uint64_t node_id_;
};

}  // namespace kv::server
