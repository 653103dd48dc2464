// Internal commands as they arrive in committed log entries (and, forwarded, from the wire):
// each record is decoded, checked with the forwarding edge rules, and applied to a real state
// machine on RocksDB. Applying any decodable command must succeed (a committed entry that fails
// to apply would stop the node), and the applied index must advance by one per command.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "server/kv_state_machine.h"
#include "server/raft_service.h"
#include "storage/engine.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

struct World {
  std::unique_ptr<kv::storage::Engine> engine;
  std::unique_ptr<kv::server::KvStateMachine> sm;
  World() {
    std::string dir = std::filesystem::temp_directory_path().string() + "/kv-command-fuzzer-" +
                      std::to_string(getpid());
    std::filesystem::remove_all(dir);
    engine = *kv::storage::Engine::Open(kv::storage::EngineOptions{dir});
    sm = std::make_unique<kv::server::KvStateMachine>(engine.get(), 1, 1);
    if (!sm->Load().ok()) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;
  kv::fuzz::Records records(data, size);
  std::string_view record;
  std::vector<kv::internal::Command> commands;
  while (records.Next(&record) && commands.size() < 64) {
    kv::internal::Command c;
    if (!c.ParseFromArray(record.data(), static_cast<int>(record.size()))) continue;
    (void)kv::server::ValidateForwardedCommand(c, 1, 0, kv::server::RequestLimits{});
    commands.push_back(std::move(c));
  }
  if (commands.empty()) return 0;
  std::vector<kv::server::IndexedCommand> batch;
  uint64_t index = world.sm->applied_index();
  for (const auto& c : commands) batch.push_back({++index, 1, &c});
  auto results = world.sm->Apply(batch, false);
  if (!results.ok() || results->size() != commands.size()) std::abort();
  if (world.sm->applied_index() != index) std::abort();
  return 0;
}
