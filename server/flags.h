// kvd's command line and config file (--config, INI/TOML, flag names as keys) into a NodeConfig.
// Kept apart from main() so that what an operator writes can be tested and fuzzed.
#pragma once

#include <string>

#include "server/node_config.h"

namespace kv::server {

struct FlagsOutcome {
  enum Action { kRun, kExit };
  Action action = kRun;
  int exit_code = 0;
  std::string message;  // help text (exit 0) or the error (exit 2)
  NodeConfig config;    // kRun: parsed, not yet validated (ValidateConfig)
};

FlagsOutcome ParseFlags(int argc, const char* const* argv);

}  // namespace kv::server
