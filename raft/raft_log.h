// RaftLog: the log entries after the last snapshot, in memory. The core owns it; the driver
// persists what Ready hands out and reloads it on restart. Index snap_index() is the last entry
// the snapshot replaced (0 with no snapshot); entries are snap_index()+1 .. last_index().
// Not thread-safe (owned by one Raft).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "kvstore/v1/raft.pb.h"

namespace kv::raft {

class RaftLog {
 public:
  void Reset(uint64_t snap_index, uint64_t snap_term);

  uint64_t snap_index() const { return snap_index_; }
  uint64_t snap_term() const { return snap_term_; }
  uint64_t first_index() const { return snap_index_ + 1; }
  uint64_t last_index() const { return snap_index_ + entries_.size(); }
  uint64_t last_term() const;
  // Payload bytes of the entries held (what compaction by size looks at).
  uint64_t bytes() const { return bytes_; }
  // Payload bytes of entries first_index() .. i.
  uint64_t BytesThrough(uint64_t i) const;
  // Term of entry i: snap_term for snap_index; nullopt when i is compacted or beyond the end.
  std::optional<uint64_t> Term(uint64_t i) const;
  // REQUIRES: first_index() <= i <= last_index().
  const raftpb::Entry& At(uint64_t i) const { return entries_[i - first_index()]; }

  // REQUIRES: e.index() == last_index() + 1.
  void Append(raftpb::Entry e);
  // Drops entries >= i. REQUIRES: i > snap_index().
  void TruncateFrom(uint64_t i);
  // Drops entries <= i (they are covered by a snapshot). REQUIRES: snap_index() < i <= last.
  void CompactTo(uint64_t i);
  // Entries [lo, hi) up to about max_bytes, at least one. REQUIRES: first <= lo <= hi <= last+1.
  std::vector<raftpb::Entry> Slice(uint64_t lo, uint64_t hi, size_t max_bytes) const;
  // Raft §5.4.1: is (last_index, last_term) at least as up to date as this log?
  bool IsUpToDate(uint64_t last_index, uint64_t last_term) const;
  // First index of the run of entries with the same term as entry i (i must exist), not below
  // `floor`. Used to skip a whole conflicting term in one rejection.
  uint64_t FirstIndexOfTermAt(uint64_t i, uint64_t floor) const;

 private:
  uint64_t snap_index_ = 0;
  uint64_t snap_term_ = 0;
  std::deque<raftpb::Entry> entries_;
  uint64_t bytes_ = 0;
};

}  // namespace kv::raft
