// kvd: the kvstore daemon. Flags or a config file (INI/TOML, --config) configure it; SIGTERM or
// SIGINT shut it down gracefully.
#include <csignal>
#include <cstdio>

#include "absl/synchronization/mutex.h"
#include "server/flags.h"
#include "server/logging.h"
#include "server/node.h"

namespace {

// The log's options from the flags; an unknown level or format is a usage error.
absl::StatusOr<kv::logging::Options> LogOptions(const kv::server::NodeConfig& config) {
  kv::logging::Options options;
  auto level = kv::logging::ParseLevel(config.log_level);
  if (!level.ok()) return level.status();
  auto format = kv::logging::ParseFormat(config.log_format);
  if (!format.ok()) return format.status();
  options.level = *level;
  options.format = *format;
  options.node_id = config.node_id;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil tracks lock-order graphs on every mutex acquisition (about 2% of a put's CPU
  // here); lock ordering is reviewed in code instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto flags = kv::server::ParseFlags(argc, argv);
  if (flags.action == kv::server::FlagsOutcome::kExit) {
    std::fprintf(flags.exit_code == 0 ? stdout : stderr, "%s%s\n",
                 flags.exit_code == 0 ? "" : "kvd: ", flags.message.c_str());
    return flags.exit_code;
  }
  kv::server::NodeConfig& config = flags.config;
  auto log_options = LogOptions(config);
  if (!log_options.ok()) {
    std::fprintf(stderr, "kvd: %s\n", std::string(log_options.status().message()).c_str());
    return 2;
  }
  kv::logging::Configure(*log_options);
  if (auto s = kv::server::FillDefaults(&config); !s.ok()) {
    kv::logging::Error("{}", std::string(s.message()));
    return 2;
  }

  // Block the shutdown signals in every thread; this thread collects them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  kv::server::Node node(config);
  if (auto s = node.Start(); !s.ok()) {
    kv::logging::Error("refusing to start: {}", s.ToString());
    return 1;
  }
  if (!config.sync) {
    kv::logging::Warning("--unsafe-no-fsync: acknowledged writes can be lost");
  }
  kv::logging::Info("serving clients on {}{}, peers on {}{}, data in {}", config.listen,
                    config.tls.enabled() ? " (TLS)" : "", config.peer_listen,
                    config.peer_tls.enabled()         ? " (mTLS)"
                    : !config.peer_token_file.empty() ? " (peer token)"
                                                      : " (UNAUTHENTICATED: trusted network only)",
                    config.data_dir);
  if (!config.control_listen.empty()) {
    kv::logging::Info("control on {}, metrics on {}", config.control_listen,
                      config.metrics_listen.empty() ? "(off)" : config.metrics_listen);
  }
  int sig = 0;
  sigwait(&signals, &sig);
  kv::logging::Info("{} received, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  node.Shutdown();
  kv::logging::Info("stopped");
  return 0;
}
