#include "raft/raft_log.h"

#include <algorithm>

namespace kv::raft {

void RaftLog::Reset(uint64_t snap_index, uint64_t snap_term) {
  snap_index_ = snap_index;
  snap_term_ = snap_term;
  entries_.clear();
  bytes_ = 0;
}

uint64_t RaftLog::last_term() const {
  return entries_.empty() ? snap_term_ : entries_.back().term();
}

std::optional<uint64_t> RaftLog::Term(uint64_t i) const {
  if (i == snap_index_) return snap_term_;
  if (i < snap_index_ || i > last_index()) return std::nullopt;
  return At(i).term();
}

void RaftLog::Append(raftpb::Entry e) {
  bytes_ += e.data().size();
  entries_.push_back(std::move(e));
}

void RaftLog::TruncateFrom(uint64_t i) {
  if (i > last_index()) return;
  for (uint64_t j = i; j <= last_index(); ++j) bytes_ -= At(j).data().size();
  entries_.resize(i - first_index());
}

void RaftLog::CompactTo(uint64_t i) {
  uint64_t term = *Term(i);
  for (uint64_t j = first_index(); j <= i; ++j) bytes_ -= At(j).data().size();
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<long>(i - snap_index_));
  snap_index_ = i;
  snap_term_ = term;
}

uint64_t RaftLog::BytesThrough(uint64_t i) const {
  uint64_t bytes = 0;
  for (uint64_t j = first_index(); j <= std::min(i, last_index()); ++j) {
    bytes += At(j).data().size();
  }
  return bytes;
}

std::vector<raftpb::Entry> RaftLog::Slice(uint64_t lo, uint64_t hi, size_t max_bytes) const {
  std::vector<raftpb::Entry> out;
  size_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const auto& e = At(i);
    bytes += e.data().size() + 24;
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) const {
  return last_term > this->last_term() ||
         (last_term == this->last_term() && last_index >= this->last_index());
}

uint64_t RaftLog::FirstIndexOfTermAt(uint64_t i, uint64_t floor) const {
  uint64_t term = *Term(i);
  floor = std::max(floor, first_index());
  while (i > floor && Term(i - 1) == term) --i;
  return i;
}

}  // namespace kv::raft
