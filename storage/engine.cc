#include "storage/engine.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace kv::storage {

struct IteratorBounds {
  std::string lower, upper;
  rocksdb::Slice lower_slice, upper_slice;
};

namespace {

constexpr const char* kColumnNames[] = {"data", "raft", "meta"};

absl::Status ToStatus(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

rocksdb::Slice ToSlice(std::string_view v) { return rocksdb::Slice(v.data(), v.size()); }

rocksdb::ColumnFamilyOptions ColumnOptions(const std::shared_ptr<rocksdb::Cache>& cache,
                                           bool point_lookups) {
  rocksdb::ColumnFamilyOptions cf;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  if (point_lookups) table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.write_buffer_size = 32 << 20;
  return cf;
}

}  // namespace

WriteBatch::WriteBatch(const Engine& engine)
    : engine_(&engine), batch_(std::make_unique<rocksdb::WriteBatch>()) {}
WriteBatch::~WriteBatch() = default;
WriteBatch::WriteBatch(WriteBatch&&) noexcept = default;
WriteBatch& WriteBatch::operator=(WriteBatch&&) noexcept = default;

void WriteBatch::Put(Column cf, std::string_view key, std::string_view value) {
  batch_->Put(engine_->Handle(cf), ToSlice(key), ToSlice(value));
}
void WriteBatch::Delete(Column cf, std::string_view key) {
  batch_->Delete(engine_->Handle(cf), ToSlice(key));
}
void WriteBatch::DeleteRange(Column cf, std::string_view begin, std::string_view end) {
  batch_->DeleteRange(engine_->Handle(cf), ToSlice(begin), ToSlice(end));
}
size_t WriteBatch::Count() const { return batch_->Count(); }

Snapshot::~Snapshot() { db_->ReleaseSnapshot(snap_); }

Iterator::~Iterator() = default;
bool Iterator::Valid() const { return it_->Valid(); }
void Iterator::Next() { it_->Next(); }
std::string_view Iterator::key() const {
  auto k = it_->key();
  return {k.data(), k.size()};
}
std::string_view Iterator::value() const {
  auto v = it_->value();
  return {v.data(), v.size()};
}
absl::Status Iterator::status() const { return ToStatus(it_->status(), "iterator"); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  // Stop at the first corrupt WAL record instead of silently dropping a tail of synced writes.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 4;
  db_options.max_total_wal_size = 256 << 20;
  if (options.env) {
    db_options.env = options.env;
    // A simulated crash closes the database: it must not write anything a real crash would not.
    db_options.avoid_flush_during_shutdown = true;
  }

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> columns;
  columns.emplace_back(rocksdb::kDefaultColumnFamilyName, ColumnOptions(cache, false));
  columns.emplace_back(kColumnNames[0], ColumnOptions(cache, true));
  columns.emplace_back(kColumnNames[1], ColumnOptions(cache, false));
  columns.emplace_back(kColumnNames[2], ColumnOptions(cache, true));

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, columns, &handles, &raw);
  if (!s.ok()) {
    return ToStatus(s, absl::StrCat("cannot open RocksDB at ", options.path));
  }
  auto engine = std::unique_ptr<Engine>(new Engine());
  engine->path_ = options.path;
  engine->db_.reset(raw);
  engine->handles_ = std::move(handles);
  LogEngineOptions log;
  log.dir = options.path + "/raft-log";
  log.env = options.env;
  log.segment_bytes = options.raft_log_segment_bytes;
  log.before_delete = [db = engine->db_.get()] {
    return ToStatus(db->SyncWAL(), "syncing the WAL");
  };
  auto raft_log = LogEngine::Open(std::move(log));
  if (!raft_log.ok()) return raft_log.status();
  engine->raft_log_ = *std::move(raft_log);
  return engine;
}

Engine::~Engine() {
  raft_log_.reset();
  if (!db_) return;
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  db_->Close();
}

rocksdb::ColumnFamilyHandle* Engine::Handle(Column cf) const {
  return handles_[static_cast<size_t>(cf) + 1];
}

absl::StatusOr<std::optional<std::string>> Engine::Get(Column cf, std::string_view key,
                                                       const Snapshot* snapshot) const {
  rocksdb::ReadOptions ro;
  if (snapshot) ro.snapshot = snapshot->snap_;
  std::string value;
  rocksdb::Status s = db_->Get(ro, Handle(cf), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return ToStatus(s, "get");
  return std::optional<std::string>(std::move(value));
}

absl::Status Engine::SyncWal() { return ToStatus(db_->SyncWAL(), "syncing the WAL"); }

absl::Status Engine::Write(WriteBatch& batch, bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return ToStatus(db_->Write(wo, batch.batch_.get()), "write");
}

SstFileBuilder::SstFileBuilder(Column column, std::string path)
    : column_(column), path_(std::move(path)) {}
SstFileBuilder::~SstFileBuilder() = default;

absl::Status SstFileBuilder::Put(std::string_view key, std::string_view value) {
  return ToStatus(writer_->Put(ToSlice(key), ToSlice(value)), absl::StrCat("writing ", path_));
}

absl::Status SstFileBuilder::DeleteRange(std::string_view begin, std::string_view end) {
  return ToStatus(writer_->DeleteRange(ToSlice(begin), ToSlice(end)),
                  absl::StrCat("writing ", path_));
}

absl::Status SstFileBuilder::Finish() {
  return ToStatus(writer_->Finish(), absl::StrCat("finishing ", path_));
}

absl::StatusOr<std::unique_ptr<SstFileBuilder>> Engine::NewSstFile(Column cf,
                                                                   std::string path) const {
  auto builder = std::unique_ptr<SstFileBuilder>(new SstFileBuilder(cf, std::move(path)));
  rocksdb::Options options(db_->GetDBOptions(), db_->GetOptions(Handle(cf)));
  builder->writer_ =
      std::make_unique<rocksdb::SstFileWriter>(rocksdb::EnvOptions(options), options, Handle(cf));
  if (auto s = ToStatus(builder->writer_->Open(builder->path_),
                        absl::StrCat("creating ", builder->path_));
      !s.ok()) {
    return s;
  }
  return builder;
}

absl::Status Engine::Ingest(const std::vector<IngestFile>& files) {
  // One argument per column family (RocksDB refuses two), holding all of that column's files;
  // their key ranges must not overlap.
  std::vector<rocksdb::IngestExternalFileArg> args;
  std::vector<std::string> links;
  for (const auto& f : files) {
    // RocksDB moves what it ingests; a link of our own keeps the file for a repeat after a crash.
    std::string link = f.path + ".ingest";
    std::error_code ec;
    std::filesystem::remove(link, ec);
    std::filesystem::create_hard_link(f.path, link, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("linking ", f.path, ": ", ec.message()));
    links.push_back(link);
    auto same = std::find_if(args.begin(), args.end(),
                             [&](const auto& a) { return a.column_family == Handle(f.column); });
    if (same != args.end()) {
      same->external_files.push_back(link);
      continue;
    }
    rocksdb::IngestExternalFileArg arg;
    arg.column_family = Handle(f.column);
    arg.external_files = {link};
    arg.options.move_files = true;
    arg.options.snapshot_consistency = true;
    arg.options.allow_global_seqno = true;
    arg.options.allow_blocking_flush = true;
    arg.options.verify_checksums_before_ingest = true;
    args.push_back(std::move(arg));
  }
  auto s = ToStatus(db_->IngestExternalFiles(args), "ingesting snapshot files");
  for (const auto& link : links) {
    std::error_code ec;
    std::filesystem::remove(link, ec);
  }
  return s;
}

std::unique_ptr<Snapshot> Engine::GetSnapshot() const {
  return std::unique_ptr<Snapshot>(new Snapshot(db_.get(), db_->GetSnapshot()));
}

std::unique_ptr<Iterator> Engine::NewIterator(Column cf, std::string_view lower,
                                              std::string_view upper,
                                              const Snapshot* snapshot) const {
  auto it = std::unique_ptr<Iterator>(new Iterator());
  it->bounds_ = std::make_unique<IteratorBounds>();
  auto& b = *it->bounds_;
  b.lower.assign(lower);
  b.upper.assign(upper);
  b.lower_slice = rocksdb::Slice(b.lower);
  b.upper_slice = rocksdb::Slice(b.upper);
  rocksdb::ReadOptions ro;
  if (snapshot) ro.snapshot = snapshot->snap_;
  ro.iterate_lower_bound = &b.lower_slice;
  if (!b.upper.empty()) ro.iterate_upper_bound = &b.upper_slice;
  it->it_.reset(db_->NewIterator(ro, Handle(cf)));
  it->it_->Seek(b.lower_slice);
  return it;
}

uint64_t Engine::EstimateKeys(Column cf) const {
  uint64_t n = 0;
  db_->GetIntProperty(Handle(cf), "rocksdb.estimate-num-keys", &n);
  return n;
}

uint64_t Engine::ApproximateSpanBytes(std::string_view begin, std::string_view end) const {
  rocksdb::Range range(ToSlice(begin), ToSlice(end));
  uint64_t size = 0;
  rocksdb::SizeApproximationOptions options;
  options.include_memtables = true;
  options.include_files = true;
  if (!db_->GetApproximateSizes(options, Handle(Column::kData), &range, 1, &size).ok()) return 0;
  return size;
}

uint64_t Engine::ApproximateSizeBytes() const {
  uint64_t total = 0;
  for (auto* h : handles_) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, "rocksdb.total-sst-files-size", &v)) total += v;
    if (db_->GetIntProperty(h, "rocksdb.cur-size-all-mem-tables", &v)) total += v;
  }
  return total;
}

}  // namespace kv::storage
