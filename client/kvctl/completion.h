// Shell completion for kvctl, generated from its own command tree, so it never falls behind the
// commands and flags kvctl actually has.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace kv::kvctl {

// A bash script (`source <(kvctl completion bash)`) completing subcommands at every level and
// the long flags of the command being typed (global flags included: they work anywhere).
std::string BashCompletion(const CLI::App& root);

}  // namespace kv::kvctl
