#include "server/system_command.h"

#include <future>
#include <memory>

#include "absl/time/clock.h"

namespace kv::server {

absl::StatusOr<WriteOutcome> ProposeWithRetry(Replica* replica, const internal::Command& command,
                                              absl::Time deadline,
                                              v1::WriteConsistency consistency) {
  absl::StatusOr<WriteOutcome> outcome = absl::UnavailableError("no leader");
  while (absl::Now() < deadline) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<WriteOutcome>>>();
    auto future = promise->get_future();
    replica->ProposeWrite(
        command, consistency, deadline,
        [promise](absl::StatusOr<WriteOutcome> r) { promise->set_value(std::move(r)); });
    if (future.wait_until(absl::ToChronoTime(deadline + absl::Seconds(1))) !=
        std::future_status::ready) {
      return absl::DeadlineExceededError("not committed in time");
    }
    outcome = future.get();
    if (outcome.ok() || !absl::IsUnavailable(outcome.status())) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return outcome;
}

absl::StatusOr<WriteOutcome> ProposeSystemCommand(Replica* metadata_group,
                                                  const internal::Command& command,
                                                  absl::Time deadline) {
  auto outcome = ProposeWithRetry(metadata_group, command, deadline);
  if (!outcome.ok()) return outcome.status();
  while (metadata_group->state_machine()->applied_index() < outcome->index &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  return outcome;
}

}  // namespace kv::server
