// LocalReplica: a one-node data group without Raft. Writes are group-committed: one thread takes
// every write queued since its last round, applies them in order in one WriteBatch with one
// fsync, then completes them. Used when kvd runs without --peers.
#pragma once

#include <deque>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "server/replica.h"

namespace kv::server {

class LocalReplica : public Replica {
 public:
  LocalReplica(KvStateMachine* state_machine, uint64_t node_id, bool sync);
  ~LocalReplica() override;

  void ProposeWrite(internal::Command command, v1::WriteConsistency consistency,
                    absl::Time deadline, WriteDone done) override;
  void ReadBarrier(const ReadRequirement& requirement, ReadReady ready) override;
  const KvStateMachine& state_machine() const override { return *state_machine_; }
  uint64_t node_id() const override { return node_id_; }
  uint64_t leader_id() const override { return node_id_; }

 private:
  struct Pending {
    internal::Command command;
    WriteDone done;
  };
  void Run();

  KvStateMachine* const state_machine_;
  const uint64_t node_id_;
  const bool sync_;
  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kv::server
