#include "server/health_monitor.h"

#include <grpcpp/health_check_service_interface.h>
#include <sys/statvfs.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/logging.h"

namespace kv::server {

HealthMonitor::HealthMonitor(RaftDriver* driver, uint64_t group_id, ControlState* control,
                             std::string data_dir, HealthThresholds thresholds)
    : driver_(driver),
      group_id_(group_id),
      control_(control),
      data_dir_(std::move(data_dir)),
      thresholds_(thresholds) {}

HealthMonitor::~HealthMonitor() { Stop(); }

void HealthMonitor::Start(grpc::HealthCheckServiceInterface* health) {
  health_ = health;
  thread_ = std::thread([this] { Run(); });
}

void HealthMonitor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

v1::HealthReport HealthMonitor::Report() const {
  absl::MutexLock lock(&mu_);
  return last_;
}

v1::HealthReport HealthMonitor::Evaluate() const {
  GroupStatus s = driver_->Status(group_id_);
  v1::HealthReport r;
  r.set_node_id(driver_->node_id());
  r.set_role(raft::RoleName(s.role));
  r.set_leader_id(s.leader_id);
  r.set_term(s.term);
  r.set_commit_index(s.commit);
  r.set_applied_index(s.applied);
  r.set_apply_lag(s.commit > s.applied ? s.commit - s.applied : 0);
  r.set_heartbeat_age_ms(s.heartbeat_age_ms);
  r.set_fsync_p99_ms(s.fsync_p99_ms);
  r.set_apply_p99_ms(s.apply_p99_ms);
  struct statvfs fs {};
  if (statvfs(data_dir_.c_str(), &fs) == 0) {
    r.set_disk_free_bytes(static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize);
  }
  if (control_) r.set_kill_switch(control_->mode());
  bool serving = s.leader_id != 0;
  if (!serving) r.add_reasons("no leader known");
  if (s.fsync_p99_ms > thresholds_.fsync_p99_ms) {
    r.add_reasons(absl::StrCat("fsync p99 ", s.fsync_p99_ms, " ms > ", thresholds_.fsync_p99_ms));
  }
  if (s.apply_p99_ms > thresholds_.apply_p99_ms) {
    r.add_reasons(absl::StrCat("apply p99 ", s.apply_p99_ms, " ms > ", thresholds_.apply_p99_ms));
  }
  if (r.apply_lag() > thresholds_.apply_lag) {
    r.add_reasons(absl::StrCat("apply lag ", r.apply_lag(), " > ", thresholds_.apply_lag));
  }
  if (s.role != raft::Role::kLeader && s.heartbeat_age_ms > thresholds_.heartbeat_age_ms) {
    r.add_reasons(absl::StrCat("leader silent for ", static_cast<int64_t>(s.heartbeat_age_ms),
                               " ms > ", thresholds_.heartbeat_age_ms));
  }
  if (r.disk_free_bytes() > 0 && r.disk_free_bytes() < thresholds_.disk_free_bytes) {
    r.add_reasons(absl::StrCat("disk free ", r.disk_free_bytes() >> 20, " MiB < ",
                               thresholds_.disk_free_bytes >> 20, " MiB"));
  }
  r.set_status(!serving ? "NOT_SERVING" : r.reasons_size() > 0 ? "DEGRADED" : "SERVING");
  if (cluster_warnings_) {
    for (auto& w : cluster_warnings_()) r.add_cluster_warnings(std::move(w));
  }
  return r;
}

void HealthMonitor::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(500))) return;
    }
    v1::HealthReport r = Evaluate();
    {
      absl::MutexLock lock(&mu_);
      last_ = r;
    }
    if (health_) {
      health_->SetServingStatus("", true);  // liveness: the process answers
      health_->SetServingStatus(
          "kv", r.status() != "NOT_SERVING" && r.apply_lag() <= thresholds_.apply_lag);
      health_->SetServingStatus("raft", r.leader_id() != 0);
    }
    // A degraded leader slows everyone; hand over to the most caught-up reachable voter.
    degraded_checks_ = r.status() == "DEGRADED" ? degraded_checks_ + 1 : 0;
    int64_t now_ms = absl::ToUnixMillis(absl::Now());
    if (thresholds_.transfer_leadership_when_degraded && r.role() == "leader" &&
        degraded_checks_ >= 4 && now_ms - last_transfer_ms_ > 30000) {
      GroupStatus s = driver_->Status(group_id_);
      uint64_t target = 0, best = 0;
      for (const auto& p : s.peers) {
        if (p.voter && p.recent_active && p.match >= best) {
          best = p.match;
          target = p.id;
        }
      }
      if (target != 0) {
        logging::Warning(logging::Group{group_id_}, "degraded ({}); handing leadership to node {}",
                         r.reasons(0), target);
        driver_->TransferLeadership(group_id_, target);
        last_transfer_ms_ = now_ms;
      }
    }
  }
}

}  // namespace kv::server
