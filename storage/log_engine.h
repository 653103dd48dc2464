// LogEngine: every Raft group's log entries and hard state on a node, in append-only segment
// files of their own, beside (not inside) RocksDB. A Write is one checksummed record holding the
// changes of every group in a driver iteration: one write(2) and at most one fdatasync, no
// memtable insert, no later delete and compaction. Segments are dropped whole once no live entry
// or state is left in them (TiKV's raft-engine and etcd's WAL are the anchors).
//
// It knows nothing of Raft: entries are (index, bytes) and a group's state is one opaque value
// (the server keeps its HardState there). What replay recovers is handed out once per group.
//
// Files: DIR/NNNNNNNNNNNNNNNNNNNN.seg, each starting with an 8-byte magic, then records
//   fixed32 length | fixed32 crc32c(length bytes, payload) | payload (ops, see log_engine.cc)
// A record is all or nothing: at open, a torn or corrupted record at the end of the newest
// segment (a write cut by a crash) is detected by its length or checksum and dropped with
// everything after it, and the file is cut back to its last whole record; the same damage in an
// older segment, which was synced whole before the next one began, is reported as DataLoss.
//
// Durability: a record is durable once a Write with sync = true (of it or of a later record)
// returned. Records reach the file in Write order.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace rocksdb {
class Env;
class WritableFile;
class Directory;
}  // namespace rocksdb

namespace kv::storage {

struct LogEngineOptions {
  std::string dir;
  // The file system (nullptr: the real one); the node simulation passes one that loses unsynced
  // writes on a simulated crash.
  rocksdb::Env* env = nullptr;
  // A new segment starts once the current one holds this many bytes.
  uint64_t segment_bytes = 64 << 20;
  // Past this many segments, the groups whose live entries keep the oldest one on disk are
  // asked to rewrite them (TakeRewriteRequests).
  size_t max_segments = 4;
  // Called before segment files are deleted. It must make durable whatever the caller did before
  // the Compacted and Forget calls that freed them (kvd: the RocksDB WAL, which holds the
  // compaction points and the tombstones of groups).
  std::function<absl::Status()> before_delete;
};

// Changes to many groups' logs, applied in order and atomically by LogEngine::Write.
class LogBatch {
 public:
  LogBatch();
  // Everything of the group: entries and state (a replica destroyed, or rewritten next).
  void DropGroup(uint64_t group);
  // Every entry of the group; its state stays (a snapshot replaced the log).
  void DropEntries(uint64_t group);
  // Entries at `from` and above.
  void Truncate(uint64_t group, uint64_t from);
  void SetState(uint64_t group, std::string_view state);
  // An entry after the group's last (an index at or below the last truncates there first).
  // Returns where to write its `size` bytes.
  char* Append(uint64_t group, uint64_t index, size_t size);
  void Append(uint64_t group, uint64_t index, std::string_view bytes);

  bool empty() const { return ops_ == 0; }
  size_t ops() const { return ops_; }
  size_t bytes() const { return buf_.size(); }

 private:
  friend class LogEngine;
  void Op(uint8_t type, uint64_t group);
  std::string buf_;  // record header room, then the encoded ops
  size_t ops_ = 0;
};

// A group's log as replay found it.
struct RecoveredLog {
  std::optional<std::string> state;
  uint64_t first_index = 0;  // of entries[0]
  std::vector<std::string> entries;
  bool empty() const { return !state && entries.empty(); }
};

struct LogEngineStats {
  uint64_t segments = 0;
  uint64_t disk_bytes = 0;
  uint64_t writes = 0;
  uint64_t syncs = 0;
  uint64_t bytes_written = 0;
  uint64_t segments_deleted = 0;
  uint64_t torn_bytes_dropped = 0;  // at the last open
};

class LogEngine {
 public:
  static absl::StatusOr<std::unique_ptr<LogEngine>> Open(LogEngineOptions options);
  ~LogEngine();
  LogEngine(const LogEngine&) = delete;
  LogEngine& operator=(const LogEngine&) = delete;

  // An empty batch writes nothing (but sync = true still syncs what earlier writes left).
  // Fills in the record header in the batch's buffer: write a batch once.
  absl::Status Write(LogBatch& batch, bool sync);

  // What replay found of `group`, handed out once (later calls return an empty log).
  RecoveredLog TakeRecovered(uint64_t group);
  // Groups replay found whose logs nobody took: after the caller loaded every group it knows,
  // these are leftovers of replicas it no longer has (DropGroup them once that is durable).
  std::vector<uint64_t> UntakenGroups() const;

  // The caller will never need `group`'s entries at or below `index` again.
  void Compacted(uint64_t group, uint64_t index);
  // Groups whose live entries hold the oldest segment on disk while there are more than
  // max_segments: the caller should rewrite each (DropGroup, SetState, Append of every live
  // entry), or DropGroup it if the group is gone. Each request is handed out once.
  std::vector<uint64_t> TakeRewriteRequests();

  LogEngineStats stats() const;
  const std::string& dir() const { return options_.dir; }

 private:
  struct Span {  // entries first..last of a group, in one segment
    uint64_t segment, first, last;
  };
  struct GroupAccount {
    std::deque<Span> spans;
    std::optional<std::string> state;
    uint64_t state_segment = 0;
  };
  struct Segment {
    uint64_t id;
    uint64_t bytes;
  };

  explicit LogEngine(LogEngineOptions options);
  absl::Status Replay();
  absl::Status ReplaySegment(uint64_t id, bool newest, uint64_t* valid_bytes);
  absl::Status CutTo(uint64_t id, uint64_t valid_bytes);
  absl::Status StartSegment() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AppendRecord(std::string_view record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DeleteDeadSegments() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NoteRewrites() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies the ops of one record to the accounts (and, during replay, to `recovered_`).
  absl::Status ApplyOps(std::string_view ops, uint64_t segment, bool replaying)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string SegmentPath(uint64_t id) const;

  const LogEngineOptions options_;
  rocksdb::Env* const env_;
  mutable absl::Mutex mu_;
  std::unique_ptr<rocksdb::WritableFile> active_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<rocksdb::Directory> dir_handle_ ABSL_GUARDED_BY(mu_);
  std::deque<Segment> segments_ ABSL_GUARDED_BY(mu_);  // oldest first; the last is active
  bool unsynced_ ABSL_GUARDED_BY(mu_) = false;
  bool maybe_dead_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, GroupAccount> accounts_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, RecoveredLog> recovered_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> rewrite_requests_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint64_t> writes_{0}, syncs_{0}, bytes_written_{0}, segments_deleted_{0};
  std::atomic<uint64_t> segment_count_{0}, disk_bytes_{0};
  uint64_t torn_bytes_dropped_ = 0;
};

}  // namespace kv::storage
