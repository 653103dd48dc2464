#include "server/local_replica.h"

#include <vector>

namespace kv::server {

LocalReplica::LocalReplica(KvStateMachine* state_machine, uint64_t node_id, bool sync)
    : state_machine_(state_machine), node_id_(node_id), sync_(sync), thread_([this] { Run(); }) {}

LocalReplica::~LocalReplica() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void LocalReplica::ProposeWrite(internal::Command command, v1::WriteConsistency,
                                absl::Time, WriteDone done) {
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    done(absl::UnavailableError("node is shutting down"));
    return;
  }
  queue_.push_back(Pending{std::move(command), std::move(done)});
}

void LocalReplica::ReadBarrier(const ReadRequirement& requirement, ReadReady ready) {
  // The only replica is always the leader and every acknowledged write is applied.
  ready(absl::OkStatus());
}

void LocalReplica::Run() {
  while (true) {
    std::deque<Pending> round;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](LocalReplica* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->queue_.empty();
          },
          this));
      if (queue_.empty() && stopping_) return;
      round.swap(queue_);
    }
    std::vector<IndexedCommand> commands;
    commands.reserve(round.size());
    uint64_t index = state_machine_->applied_index();
    for (auto& p : round) commands.push_back(IndexedCommand{++index, &p.command});
    auto results = state_machine_->Apply(commands, sync_);
    for (size_t i = 0; i < round.size(); ++i) {
      if (!results.ok()) {
        round[i].done(results.status());
      } else {
        round[i].done(WriteOutcome{(*results)[i], commands[i].index});
      }
    }
  }
}

}  // namespace kv::server
