// Engine: the node's one RocksDB database with the column families `data`, `raft` and `meta`,
// and beside it (in PATH/raft-log) the node's Raft log engine (log_engine.h), which holds every
// group's log entries and hard state; the `raft` column keeps the snapshot meta of each group.
//
// It knows nothing of Raft or of the client API: it stores bytes under keys (layout in keys.h),
// applies WriteBatches atomically, and hands out consistent snapshots and bounded iterators.
// Writes are synced (fsync of the WAL) unless the caller asks otherwise.
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/log_engine.h"

namespace rocksdb {
class DB;
class Env;
class SstFileWriter;
class ColumnFamilyHandle;
class Iterator;
class Snapshot;
class WriteBatch;
}  // namespace rocksdb

namespace kv::storage {

enum class Column { kData = 0, kRaft = 1, kMeta = 2 };

struct EngineOptions {
  std::string path;
  // Block cache shared by all column families.
  size_t block_cache_bytes = 64 << 20;
  // The file system RocksDB runs on (nullptr: the real one). The node simulation passes one that
  // loses unsynced writes on a simulated crash.
  rocksdb::Env* env = nullptr;
  // Size of the Raft log's segment files.
  uint64_t raft_log_segment_bytes = 64 << 20;
};

class Engine;

// A group of puts and deletes applied atomically by Engine::Write.
class WriteBatch {
 public:
  explicit WriteBatch(const Engine& engine);
  ~WriteBatch();
  WriteBatch(WriteBatch&&) noexcept;
  WriteBatch& operator=(WriteBatch&&) noexcept;

  void Put(Column cf, std::string_view key, std::string_view value);
  void Delete(Column cf, std::string_view key);
  // Deletes [begin, end).
  void DeleteRange(Column cf, std::string_view begin, std::string_view end);
  size_t Count() const;

 private:
  friend class Engine;
  const Engine* engine_;
  std::unique_ptr<rocksdb::WriteBatch> batch_;
};

// A consistent point-in-time view; released when destroyed. Must not outlive its Engine.
class Snapshot {
 public:
  ~Snapshot();
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

 private:
  friend class Engine;
  Snapshot(rocksdb::DB* db, const rocksdb::Snapshot* snap) : db_(db), snap_(snap) {}
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snap_;
};

// Forward iterator over [lower, upper) of one column family.
class Iterator {
 public:
  ~Iterator();
  bool Valid() const;
  void Next();
  std::string_view key() const;
  std::string_view value() const;
  // Error that stopped iteration, if any (Valid() is then false).
  absl::Status status() const;

 private:
  friend class Engine;
  Iterator() = default;
  // Owns the bound strings and slices the RocksDB iterator points at; declared first so that it
  // is destroyed after the iterator.
  std::unique_ptr<struct IteratorBounds> bounds_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

// One SST file of a column family, written outside the database and added to it later by
// Engine::Ingest (how a received snapshot is installed without holding it in memory).
class SstFileBuilder {
 public:
  ~SstFileBuilder();
  // REQUIRES: keys strictly increasing.
  absl::Status Put(std::string_view key, std::string_view value);
  // A tombstone over [begin, end) of what the column holds when the file is ingested. It does not
  // delete this file's own keys (RocksDB lets point keys win over a range tombstone of the same
  // file), so one ingest replaces a whole span atomically.
  absl::Status DeleteRange(std::string_view begin, std::string_view end);
  // Writes the file's index and footer and fsyncs it.
  absl::Status Finish();
  Column column() const { return column_; }
  const std::string& path() const { return path_; }

 private:
  friend class Engine;
  SstFileBuilder(Column column, std::string path);
  Column column_;
  std::string path_;
  std::unique_ptr<rocksdb::SstFileWriter> writer_;
};

struct IngestFile {
  Column column = Column::kData;
  std::string path;
};

class Engine {
 public:
  // Opens or creates the database at options.path. Fails with DataLoss on corruption detected
  // while opening (checksums of the WAL, manifest and table files are verified).
  static absl::StatusOr<std::unique_ptr<Engine>> Open(const EngineOptions& options);
  ~Engine();

  // nullopt when the key does not exist. With a snapshot, reads as of that snapshot.
  absl::StatusOr<std::optional<std::string>> Get(Column cf, std::string_view key,
                                                 const Snapshot* snapshot = nullptr) const;
  // Atomically applies the batch. sync = true returns only after the WAL is fsynced.
  absl::Status Write(WriteBatch& batch, bool sync);

  // A new SST file at `path` (which must not exist) for column `cf`.
  absl::StatusOr<std::unique_ptr<SstFileBuilder>> NewSstFile(Column cf, std::string path) const;
  // Adds the files to their column families in one atomic, durable step (every file's keys and
  // tombstones become visible together, above everything written before). The files themselves
  // are left in place: each is hard-linked into the database, so a crash mid-way can ingest the
  // same files again.
  absl::Status Ingest(const std::vector<IngestFile>& files);

  std::unique_ptr<Snapshot> GetSnapshot() const;
  // Iterates [lower, upper); an empty upper means no upper bound.
  std::unique_ptr<Iterator> NewIterator(Column cf, std::string_view lower, std::string_view upper,
                                        const Snapshot* snapshot = nullptr) const;

  // Approximate number of keys in a column family (RocksDB's estimate).
  uint64_t EstimateKeys(Column cf) const;
  // Bytes of SST files plus memtables of all column families.
  uint64_t ApproximateSizeBytes() const;
  // Approximate bytes of the `data` column family's keys in [begin, end) (files and memtables).
  uint64_t ApproximateSpanBytes(std::string_view begin, std::string_view end) const;
  const std::string& path() const { return path_; }

  // Fsyncs RocksDB's WAL: every write before the call is durable after it.
  absl::Status SyncWal();

  // The Raft log engine. Its segments are deleted only after SyncWal, so a compaction point or a
  // group's tombstone written here before the log forgot the entries is durable by then.
  LogEngine& raft_log() const { return *raft_log_; }

 private:
  friend class WriteBatch;
  Engine() = default;
  rocksdb::ColumnFamilyHandle* Handle(Column cf) const;

  std::string path_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<LogEngine> raft_log_;
};

}  // namespace kv::storage
