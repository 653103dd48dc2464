// kvd's config file (--config, INI/TOML): any text either configures a node or is refused with
// a message; nothing an operator writes may crash kvd.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/flags.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = std::filesystem::temp_directory_path().string() +
                                  "/kv-config-fuzzer-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const char* argv[] = {"kvd", "--config", path.c_str()};
  auto outcome = kv::server::ParseFlags(3, argv);
  if (outcome.action == kv::server::FlagsOutcome::kRun) {
    if (kv::server::FillDefaults(&outcome.config).ok()) {
      (void)kv::server::ValidateConfig(outcome.config);
    }
  } else if (outcome.exit_code != 0 && outcome.message.empty()) {
    std::abort();  // a refusal always says why
  }
  return 0;
}
