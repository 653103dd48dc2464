// kvctl's control-port commands: health, breakers, limits, kill switch. Each takes the control
// endpoints and returns the process exit code.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kv/tls.h"

namespace kv::kvctl {

struct ControlTarget {
  std::vector<std::string> endpoints;
  std::string admin_token;  // sent as "authorization: Bearer TOKEN" on changes
  double timeout_s = 5;
  TlsOptions tls;
  bool json = false;
};

int Health(const ControlTarget& t);
// grpc.health.v1 Check of each endpoint: `live` (the process answers) or `ready` (it serves
// requests); exit 0 only when every one is SERVING (container and Kubernetes probes).
int HealthProbe(const ControlTarget& t, const std::string& probe);
int Breakers(const ControlTarget& t, const std::string& action, const std::string& name);
int LimitsGet(const ControlTarget& t);
int LimitsSet(const ControlTarget& t, double per_client_rps, double per_client_burst,
              const std::map<std::string, double>& per_method_rps, uint32_t max_in_flight);
int KillSwitch(const ControlTarget& t, const std::string& action, const std::string& mode,
               const std::string& reason);

}  // namespace kv::kvctl
