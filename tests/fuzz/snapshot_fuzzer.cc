// Snapshot data as a peer streams it: decoding either refuses it, or stages records that, once
// written, load back (what the driver relies on before it lets Raft accept a snapshot).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "server/kv_state_machine.h"
#include "storage/engine.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<kv::storage::Engine> engine = [] {
    std::string dir = std::filesystem::temp_directory_path().string() + "/kv-snapshot-fuzzer-" +
                      std::to_string(getpid());
    std::filesystem::remove_all(dir);
    return *kv::storage::Engine::Open(kv::storage::EngineOptions{dir});
  }();
  kv::server::KvStateMachine sm(engine.get(), 1, 1);
  kv::raftpb::SnapshotMeta meta;
  meta.set_index(10);
  meta.set_term(2);
  meta.mutable_conf()->add_voters()->set_id(1);
  std::string bytes(reinterpret_cast<const char*>(data), size);
  kv::storage::WriteBatch batch(*engine);
  bool accepted = sm.StageInstall(meta, bytes, nullptr).ok();  // the check before Raft sees it
  bool staged = sm.StageInstall(meta, bytes, &batch).ok();
  if (accepted != staged) std::abort();  // the check must judge exactly as the install does
  if (!staged) return 0;
  if (!engine->Write(batch, false).ok()) std::abort();
  if (!sm.Load().ok()) std::abort();  // installed, so it must load
  if (sm.applied_index() != 10) std::abort();
  return 0;
}
