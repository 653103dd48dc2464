#include "client/kvctl/control_commands.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "client/channel.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvstore/v1/control.grpc.pb.h"

namespace kv::kvctl {
namespace {

using nlohmann::json;

constexpr int kOk = 0, kUsage = 2, kError = 3;

std::shared_ptr<grpc::Channel> ChannelTo(const std::string& endpoint, const TlsOptions& tls) {
  auto credentials = MakeChannelCredentials(tls);
  if (!credentials.ok()) {
    // Checked by the caller before any stub is made (CheckTls); plain text never replaces TLS.
    std::cerr << "Error: " << credentials.status().message() << "\n";
    std::exit(kUsage);
  }
  grpc::ChannelArguments args;
  ApplyTls(tls, &args);
  return grpc::CreateCustomChannel(endpoint, *credentials, args);
}

std::unique_ptr<v1::Control::Stub> Stub(const std::string& endpoint, const TlsOptions& tls) {
  return v1::Control::NewStub(ChannelTo(endpoint, tls));
}

void Prepare(grpc::ClientContext* ctx, const ControlTarget& t) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(t.timeout_s * 1000)));
  if (!t.admin_token.empty()) ctx->AddMetadata("authorization", "Bearer " + t.admin_token);
}

int Report(const ControlTarget& t, const grpc::Status& s) {
  // One error shape for every command: the code's name, as data commands print it.
  std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
  if (t.json) {
    std::cout << json{{"error", code}, {"message", s.error_message()}}.dump() << "\n";
  } else {
    std::cerr << "Error: " << code << ": " << s.error_message() << "\n";
  }
  return s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? kUsage : kError;
}

const char* ModeName(v1::KillSwitchMode m) {
  switch (m) {
    case v1::KILL_SWITCH_READ_ONLY:
      return "read-only";
    case v1::KILL_SWITCH_HALT:
      return "halt";
    default:
      return "off";
  }
}

json KillSwitchJson(const v1::KillSwitchState& s) {
  json history = json::array();
  for (const auto& e : s.history()) {
    history.push_back({{"mode", ModeName(e.mode())},
                       {"reason", e.reason()},
                       {"actor", e.actor()},
                       {"at_unix_ms", e.at_unix_ms()},
                       {"node_id", e.node_id()}});
  }
  return {{"mode", ModeName(s.mode())}, {"reason", s.reason()}, {"history", history}};
}

void PrintKillSwitch(const ControlTarget& t, const v1::KillSwitchState& s) {
  if (t.json) {
    std::cout << KillSwitchJson(s).dump() << "\n";
    return;
  }
  std::printf("kill switch: %s%s%s\n", ModeName(s.mode()), s.reason().empty() ? "" : " - ",
              s.reason().c_str());
  for (const auto& e : s.history()) {
    std::string when = absl::FormatTime("%Y-%m-%d %H:%M:%S UTC",
                                        absl::FromUnixMillis(e.at_unix_ms()), absl::UTCTimeZone());
    std::printf("  %s  %-9s by %s via node %lu: %s\n", when.c_str(), ModeName(e.mode()),
                e.actor().c_str(), static_cast<unsigned long>(e.node_id()), e.reason().c_str());
  }
}

json LimitsJson(const v1::LimitsConfig& l) {
  json methods = json::object();
  for (const auto& [m, r] : l.per_method_rps()) methods[m] = r;
  return {{"per_client_rps", l.per_client_rps()},
          {"per_client_burst", l.per_client_burst()},
          {"per_method_rps", methods},
          {"max_in_flight", l.max_in_flight()}};
}

}  // namespace

int HealthProbe(const ControlTarget& t, const std::string& probe) {
  // grpc.health.v1 services (server/health_monitor.cc): "" answers while the process does,
  // "kv" while the node serves requests.
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(probe == "ready" ? "kv" : "");
  int code = kOk;
  for (const auto& endpoint : t.endpoints) {
    grpc::ClientContext ctx;
    Prepare(&ctx, t);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s =
        grpc::health::v1::Health::NewStub(ChannelTo(endpoint, t.tls))->Check(&ctx, req, &resp);
    bool serving = s.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    std::string status =
        s.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status())
               : "UNREACHABLE";
    if (t.json) {
      std::cout << json{{"endpoint", endpoint}, {"probe", probe}, {"status", status}}.dump()
                << "\n";
    } else {
      std::printf("%s %s %s\n", endpoint.c_str(), probe.c_str(), status.c_str());
    }
    if (!serving) code = kError;
  }
  return code;
}

int Health(const ControlTarget& t) {
  json nodes = json::array();
  std::set<std::string> warnings;
  int code = kOk;
  if (!t.json) {
    std::printf("%-22s %-5s %-11s %-9s %-7s %-9s %-10s %-10s %-10s %s\n", "CONTROL", "NODE",
                "STATUS", "ROLE", "LEADER", "APPLY_LAG", "HB_AGE_MS", "FSYNC_P99", "DISK_FREE",
                "REASONS");
  }
  for (const auto& endpoint : t.endpoints) {
    grpc::ClientContext ctx;
    Prepare(&ctx, t);
    v1::HealthReport r;
    grpc::Status s = Stub(endpoint, t.tls)->Health(&ctx, {}, &r);
    if (!s.ok()) {
      code = kError;
      if (t.json) {
        nodes.push_back(
            {{"endpoint", endpoint}, {"status", "UNREACHABLE"}, {"error", s.error_message()}});
      } else {
        std::printf("%-22s %-5s %-11s %s\n", endpoint.c_str(), "?", "UNREACHABLE",
                    s.error_message().c_str());
      }
      continue;
    }
    std::string reasons;
    for (const auto& reason : r.reasons()) reasons += (reasons.empty() ? "" : "; ") + reason;
    if (t.json) {
      nodes.push_back({{"endpoint", endpoint},
                       {"node_id", r.node_id()},
                       {"status", r.status()},
                       {"role", r.role()},
                       {"leader_id", r.leader_id()},
                       {"term", r.term()},
                       {"apply_lag", r.apply_lag()},
                       {"heartbeat_age_ms", r.heartbeat_age_ms()},
                       {"fsync_p99_ms", r.fsync_p99_ms()},
                       {"apply_p99_ms", r.apply_p99_ms()},
                       {"disk_free_bytes", r.disk_free_bytes()},
                       {"kill_switch", ModeName(r.kill_switch())},
                       {"reasons", r.reasons()},
                       {"cluster_warnings", r.cluster_warnings()}});
    } else {
      std::printf("%-22s %-5lu %-11s %-9s %-7lu %-9lu %-10.0f %-10.1f %-10s %s\n", endpoint.c_str(),
                  static_cast<unsigned long>(r.node_id()), r.status().c_str(), r.role().c_str(),
                  static_cast<unsigned long>(r.leader_id()),
                  static_cast<unsigned long>(r.apply_lag()), r.heartbeat_age_ms(), r.fsync_p99_ms(),
                  (std::to_string(r.disk_free_bytes() >> 20) + "MiB").c_str(), reasons.c_str());
      for (const auto& w : r.cluster_warnings()) warnings.insert(w);
    }
  }
  if (t.json) std::cout << json{{"nodes", nodes}}.dump() << "\n";
  // Each node reports the cluster as its metadata has it: one line per distinct warning.
  if (!t.json) {
    for (const auto& w : warnings) std::printf("WARNING: %s\n", w.c_str());
  }
  return code;
}

int Breakers(const ControlTarget& t, const std::string& action, const std::string& name) {
  json out = json::array();
  int code = kOk;
  for (const auto& endpoint : t.endpoints) {
    if (action == "list") {
      grpc::ClientContext ctx;
      Prepare(&ctx, t);
      v1::ListBreakersResponse resp;
      grpc::Status s = Stub(endpoint, t.tls)->ListBreakers(&ctx, {}, &resp);
      if (!s.ok()) return Report(t, s);
      for (const auto& b : resp.breakers()) {
        if (t.json) {
          out.push_back({{"endpoint", endpoint},
                         {"name", b.name()},
                         {"state", b.state()},
                         {"override", b.override()},
                         {"transitions", b.transitions()}});
        } else {
          std::printf("%-22s %-14s %-10s override=%-13s transitions=%lu\n", endpoint.c_str(),
                      b.name().c_str(), b.state().c_str(), b.override().c_str(),
                      static_cast<unsigned long>(b.transitions()));
        }
      }
      continue;
    }
    v1::SetBreakerRequest req;
    req.set_name(name);
    req.set_override(action == "force-open"     ? "forced-open"
                     : action == "force-closed" ? "forced-closed"
                                                : "none");
    grpc::ClientContext ctx;
    Prepare(&ctx, t);
    v1::Breaker b;
    grpc::Status s = Stub(endpoint, t.tls)->SetBreaker(&ctx, req, &b);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) continue;  // not on this node
    if (!s.ok()) return Report(t, s);
    if (t.json) {
      out.push_back({{"endpoint", endpoint},
                     {"name", b.name()},
                     {"state", b.state()},
                     {"override", b.override()}});
    } else {
      std::printf("%s %s: %s (override %s)\n", endpoint.c_str(), b.name().c_str(),
                  b.state().c_str(), b.override().c_str());
    }
  }
  if (t.json) std::cout << out.dump() << "\n";
  return code;
}

int LimitsGet(const ControlTarget& t) {
  grpc::ClientContext ctx;
  Prepare(&ctx, t);
  v1::LimitsConfig l;
  grpc::Status s = Stub(t.endpoints.front(), t.tls)->GetLimits(&ctx, {}, &l);
  if (!s.ok()) return Report(t, s);
  std::cout << (t.json ? LimitsJson(l).dump() : LimitsJson(l).dump(2)) << "\n";
  return kOk;
}

int LimitsSet(const ControlTarget& t, double per_client_rps, double per_client_burst,
              const std::map<std::string, double>& per_method_rps, uint32_t max_in_flight) {
  v1::LimitsConfig l;
  l.set_per_client_rps(per_client_rps);
  l.set_per_client_burst(per_client_burst);
  for (const auto& [m, r] : per_method_rps) (*l.mutable_per_method_rps())[m] = r;
  l.set_max_in_flight(max_in_flight);
  grpc::ClientContext ctx;
  Prepare(&ctx, t);
  v1::LimitsConfig now;
  grpc::Status s = Stub(t.endpoints.front(), t.tls)->SetLimits(&ctx, l, &now);
  if (!s.ok()) return Report(t, s);
  std::cout << (t.json ? LimitsJson(now).dump() : LimitsJson(now).dump(2)) << "\n";
  return kOk;
}

int KillSwitch(const ControlTarget& t, const std::string& action, const std::string& mode,
               const std::string& reason) {
  grpc::ClientContext ctx;
  Prepare(&ctx, t);
  v1::KillSwitchState state;
  grpc::Status s;
  auto stub = Stub(t.endpoints.front(), t.tls);
  if (action == "engage") {
    v1::EngageKillSwitchRequest req;
    if (mode == "read-only") {
      req.set_mode(v1::KILL_SWITCH_READ_ONLY);
    } else if (mode == "halt") {
      req.set_mode(v1::KILL_SWITCH_HALT);
    } else {
      std::cerr << "Error: --mode must be read-only or halt\n";
      return kUsage;
    }
    req.set_reason(reason);
    s = stub->EngageKillSwitch(&ctx, req, &state);
  } else if (action == "release") {
    v1::ReleaseKillSwitchRequest req;
    req.set_reason(reason);
    s = stub->ReleaseKillSwitch(&ctx, req, &state);
  } else {
    s = stub->GetKillSwitch(&ctx, {}, &state);
  }
  if (!s.ok()) return Report(t, s);
  PrintKillSwitch(t, state);
  return kOk;
}

}  // namespace kv::kvctl
