// Progress: what a leader knows of one follower's log, and whether it may send it more
// (etcd-raft's tracker.Progress). Three states:
//   probe      one append at a time, until the follower answers where its log matches ours;
//   replicate  appends pipelined (next advanced as they are sent), at most max_inflight;
//   snapshot   nothing is sent until the snapshot the follower needs is reported.
// Pure state transitions; the leader (raft.cc) decides what to send and sends it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

namespace kv::raft {

struct Progress {
  enum class State { kProbe, kReplicate, kSnapshot };

  uint64_t match = 0;  // highest index known to be in the follower's log
  uint64_t next = 1;   // next index to send
  uint64_t applied = 0;
  State state = State::kProbe;
  // Probe: an append is outstanding (until a response or a heartbeat response).
  bool probe_sent = false;
  // Replicate: last index of each append in flight, oldest first.
  std::deque<uint64_t> inflight;
  bool snapshot_requested = false;
  bool recent_active = false;
  uint64_t read_ack = 0;  // highest ReadIndex round acknowledged

  // Nothing may be sent now (a snapshot is due, a probe is outstanding, the window is full).
  bool IsPaused(size_t max_inflight) const;
  // An append ending at `last` was sent (`entries`: how many it carried).
  void SentAppend(size_t entries, uint64_t last);
  // The follower accepted an append up to `index`: match and next advance, and a follower
  // found in probe (or just caught up from a snapshot) is replicated to from now on.
  void Accepted(uint64_t index);
  // The follower rejected an append at `rejected` (its log ends around `hint`). False for a
  // stale rejection (nothing changes); otherwise next moves back and probing starts again.
  bool Rejected(uint64_t rejected, uint64_t hint);
  // A heartbeat response: a probe may go out again, and a full window frees a slot (an append
  // may have been lost).
  void HeartbeatAnswered(size_t max_inflight);
  // The entries the follower needs are compacted away. True the first time (ask for one
  // snapshot); false while one is already asked for.
  bool NeedsSnapshot();
  // The snapshot was sent (ok) or failed: probe from match + 1; after a success, wait for the
  // follower's answer before probing.
  void SnapshotReported(bool ok);

 private:
  void BecomeProbe();
  void BecomeReplicate();
};

}  // namespace kv::raft
