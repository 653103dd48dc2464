#include "server/control_service.h"

#include <future>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "server/system_command.h"
#include "server/validation.h"

namespace kv::server {
namespace {

constexpr int kKillSwitchHistory = 20;

}  // namespace

ControlService::ControlService(Replica* replica, ControlState* control, HealthMonitor* health,
                               control::BreakerRegistry* breakers, const Authenticator* auth,
                               uint64_t node_id)
    : replica_(replica),
      control_(control),
      health_(health),
      breakers_(breakers),
      auth_(auth),
      node_id_(node_id) {}

grpc::Status ControlService::CheckAdmin(const grpc::ServerContext* ctx) const {
  return ToGrpcStatus(auth_->RequireAdmin(*ctx));
}

grpc::Status ControlService::WriteSystem(grpc::ServerContext*, const std::string& key,
                                         const std::string& value) {
  internal::Command cmd;
  cmd.mutable_system_put()->set_key(key);
  cmd.mutable_system_put()->set_value(value);
  auto outcome = ProposeSystemCommand(replica_, cmd, absl::Now() + absl::Seconds(10));
  return ToGrpcStatus(outcome.status());
}

grpc::Status ControlService::Health(grpc::ServerContext*, const v1::HealthReportRequest*,
                                    v1::HealthReport* resp) {
  *resp = health_->Evaluate();
  return grpc::Status::OK;
}

grpc::Status ControlService::ListBreakers(grpc::ServerContext*, const v1::ListBreakersRequest*,
                                          v1::ListBreakersResponse* resp) {
  for (const auto& b : breakers_->List()) {
    auto* out = resp->add_breakers();
    out->set_name(b.name);
    out->set_state(control::BreakerStateName(b.state));
    out->set_override(control::OverrideName(b.override_mode));
    out->set_transitions(b.transitions);
  }
  return grpc::Status::OK;
}

grpc::Status ControlService::SetBreaker(grpc::ServerContext* ctx, const v1::SetBreakerRequest* req,
                                        v1::Breaker* resp) {
  if (auto s = CheckAdmin(ctx); !s.ok()) return s;
  control::BreakerOverride mode;
  if (req->override() == "forced-open") {
    mode = control::BreakerOverride::kForcedOpen;
  } else if (req->override() == "forced-closed") {
    mode = control::BreakerOverride::kForcedClosed;
  } else if (req->override() == "none" || req->override() == "release") {
    mode = control::BreakerOverride::kNone;
  } else {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "override must be forced-open, forced-closed or none");
  }
  if (!breakers_->Force(req->name(), mode)) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no breaker named '", req->name(), "' (kvctl breakers list)"));
  }
  for (const auto& b : breakers_->List()) {
    if (b.name != req->name()) continue;
    resp->set_name(b.name);
    resp->set_state(control::BreakerStateName(b.state));
    resp->set_override(control::OverrideName(b.override_mode));
    resp->set_transitions(b.transitions);
  }
  return grpc::Status::OK;
}

grpc::Status ControlService::GetLimits(grpc::ServerContext*, const v1::GetLimitsRequest*,
                                       v1::LimitsConfig* resp) {
  *resp = control_->limits();
  return grpc::Status::OK;
}

grpc::Status ControlService::SetLimits(grpc::ServerContext* ctx, const v1::LimitsConfig* req,
                                       v1::LimitsConfig* resp) {
  if (auto s = CheckAdmin(ctx); !s.ok()) return s;
  if (auto s = ValidateLimits(*req); !s.ok()) return ToGrpcStatus(s);
  if (auto s = WriteSystem(ctx, kLimitsKey, req->SerializeAsString()); !s.ok()) return s;
  *resp = control_->limits();
  return grpc::Status::OK;
}

grpc::Status ControlService::ChangeKillSwitch(grpc::ServerContext* ctx, v1::KillSwitchMode mode,
                                              const std::string& reason,
                                              v1::KillSwitchState* resp) {
  if (auto s = CheckAdmin(ctx); !s.ok()) return s;
  v1::KillSwitchState state = control_->kill_switch();
  v1::KillSwitchEvent event;
  event.set_mode(mode);
  event.set_reason(reason);
  // The actor is who authenticated (RequireAdmin passed), never what a header claims.
  auto caller = auth_->Identify(*ctx);
  event.set_actor(caller.ok() ? caller->name : "unknown");
  event.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
  event.set_node_id(node_id_);
  state.set_mode(mode);
  state.set_reason(reason);
  *state.mutable_last() = event;
  *state.add_history() = event;
  while (state.history_size() > kKillSwitchHistory) state.mutable_history()->DeleteSubrange(0, 1);
  if (auto s = WriteSystem(ctx, kKillSwitchKey, state.SerializeAsString()); !s.ok()) return s;
  *resp = control_->kill_switch();
  return grpc::Status::OK;
}

grpc::Status ControlService::EngageKillSwitch(grpc::ServerContext* ctx,
                                              const v1::EngageKillSwitchRequest* req,
                                              v1::KillSwitchState* resp) {
  if (req->mode() != v1::KILL_SWITCH_READ_ONLY && req->mode() != v1::KILL_SWITCH_HALT) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "mode must be read-only or halt");
  }
  if (req->reason().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a reason is required (--reason)");
  }
  if (auto s = ValidateReason(req->reason()); !s.ok()) return ToGrpcStatus(s);
  return ChangeKillSwitch(ctx, req->mode(), req->reason(), resp);
}

grpc::Status ControlService::ReleaseKillSwitch(grpc::ServerContext* ctx,
                                               const v1::ReleaseKillSwitchRequest* req,
                                               v1::KillSwitchState* resp) {
  if (auto s = ValidateReason(req->reason()); !s.ok()) return ToGrpcStatus(s);
  return ChangeKillSwitch(ctx, v1::KILL_SWITCH_OFF,
                          req->reason().empty() ? "released" : req->reason(), resp);
}

grpc::Status ControlService::GetKillSwitch(grpc::ServerContext*, const v1::GetKillSwitchRequest*,
                                           v1::KillSwitchState* resp) {
  *resp = control_->kill_switch();
  return grpc::Status::OK;
}

}  // namespace kv::server
