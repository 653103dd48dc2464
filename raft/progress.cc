#include "raft/progress.h"

#include <algorithm>

namespace kv::raft {

bool Progress::IsPaused(size_t max_inflight) const {
  switch (state) {
    case State::kSnapshot:
      return true;
    case State::kProbe:
      return probe_sent;
    case State::kReplicate:
      return inflight.size() >= max_inflight;
  }
  return true;
}

void Progress::SentAppend(size_t entries, uint64_t last) {
  if (state == State::kReplicate) {
    if (entries > 0) {
      next = last + 1;  // pipelining: assume success, keep sending
      inflight.push_back(last);
    }
  } else {
    probe_sent = true;
  }
}

void Progress::Accepted(uint64_t index) {
  match = std::max(match, index);
  next = std::max(next, index + 1);
  while (!inflight.empty() && inflight.front() <= index) inflight.pop_front();
  if (state != State::kReplicate) BecomeReplicate();
}

bool Progress::Rejected(uint64_t rejected, uint64_t hint) {
  if (state == State::kSnapshot) return false;
  if (state == State::kReplicate && rejected <= match) return false;  // stale
  if (state == State::kProbe && rejected != next - 1) return false;   // stale
  // A probe refused at or below what the follower acknowledged: it lost those entries (a
  // replica re-created under the same node id, answered before by its old incarnation). Forget
  // them, or next could never go below match + 1 and the follower would never catch up.
  if (rejected <= match) match = 0;
  next = std::max<uint64_t>({match + 1, std::min(hint, rejected), 1});
  BecomeProbe();
  return true;
}

void Progress::HeartbeatAnswered(size_t max_inflight) {
  if (state == State::kProbe) probe_sent = false;
  if (state == State::kReplicate && inflight.size() >= max_inflight) inflight.pop_front();
}

bool Progress::NeedsSnapshot() {
  state = State::kSnapshot;
  inflight.clear();
  if (snapshot_requested) return false;
  snapshot_requested = true;
  return true;
}

void Progress::SnapshotReported(bool ok) {
  state = State::kProbe;
  snapshot_requested = false;
  probe_sent = ok;
  next = match + 1;
}

void Progress::BecomeProbe() {
  state = State::kProbe;
  inflight.clear();
  probe_sent = false;
}

void Progress::BecomeReplicate() {
  state = State::kReplicate;
  next = match + 1;
  inflight.clear();
  probe_sent = false;
  snapshot_requested = false;
}

}  // namespace kv::raft
