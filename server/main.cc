// kvd: the kvstore daemon. Flags or a config file (INI/TOML, --config) configure it; SIGTERM or
// SIGINT shut it down gracefully.
#include <csignal>
#include <cstdio>

#include "absl/synchronization/mutex.h"
#include "server/flags.h"
#include "server/node.h"

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
  if (auto s = kv::server::FillDefaults(&config); !s.ok()) {
    std::fprintf(stderr, "kvd: %s\n", std::string(s.message()).c_str());
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
    std::fprintf(stderr, "kvd: refusing to start: %s\n", s.ToString().c_str());
    return 1;
  }
  if (!config.sync) {
    std::fprintf(stderr, "kvd: WARNING: --unsafe-no-fsync: acknowledged writes can be lost\n");
  }
  std::fprintf(stderr, "kvd: node %lu serving clients on %s%s, peers on %s%s, data in %s\n",
               static_cast<unsigned long>(config.node_id), config.listen.c_str(),
               config.tls.enabled() ? " (TLS)" : "", config.peer_listen.c_str(),
               config.peer_tls.enabled()         ? " (mTLS)"
               : !config.peer_token_file.empty() ? " (peer token)"
                                                 : " (UNAUTHENTICATED: trusted network only)",
               config.data_dir.c_str());
  if (!config.control_listen.empty()) {
    std::fprintf(stderr, "kvd: control on %s, metrics on %s\n", config.control_listen.c_str(),
                 config.metrics_listen.empty() ? "(off)" : config.metrics_listen.c_str());
  }
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "kvd: %s received, shutting down\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  node.Shutdown();
  std::fprintf(stderr, "kvd: stopped\n");
  return 0;
}
