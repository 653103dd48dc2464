#include "storage/log_engine.h"

#include <rocksdb/env.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "storage/crc32c.h"

namespace kv::storage {
namespace {

// Ops inside a record: a type byte, the group as a varint, then per type:
//   kDropGroup, kDropEntries: nothing
//   kTruncate: varint from
//   kSetState: varint length, bytes
//   kAppend: varint index, varint length, bytes
enum OpType : uint8_t {
  kDropGroup = 1,
  kDropEntries = 2,
  kTruncate = 3,
  kSetState = 4,
  kAppend = 5
};

constexpr std::string_view kMagic = "KVRLOG01";
constexpr size_t kHeaderBytes = 8;  // fixed32 length, fixed32 crc
// A record longer than this is damage, not data (a batch is bounded far below it).
constexpr uint32_t kMaxRecordBytes = 1u << 30;

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63 && !in->empty(); shift += 7) {
    auto byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool GetBytes(std::string_view* in, std::string_view* bytes) {
  uint64_t n;
  if (!GetVarint(in, &n) || n > in->size()) return false;
  *bytes = in->substr(0, n);
  in->remove_prefix(n);
  return true;
}

void EncodeFixed32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t DecodeFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

uint32_t RecordCrc(std::string_view length_bytes, std::string_view payload) {
  return Crc32c(payload, Crc32c(length_bytes));
}

// Fills in the header at the front of a batch's buffer.
void Seal(std::string& buf) {
  auto length = static_cast<uint32_t>(buf.size() - kHeaderBytes);
  EncodeFixed32(buf.data(), length);
  EncodeFixed32(buf.data() + 4, RecordCrc(std::string_view(buf.data(), 4),
                                          std::string_view(buf).substr(kHeaderBytes)));
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("raft log: ", what, ": ", s.ToString()));
}

rocksdb::EnvOptions FileOptions() {
  rocksdb::EnvOptions eo;
  eo.use_mmap_writes = false;  // plain write(2) + fdatasync, as the WAL of a database
  eo.use_mmap_reads = false;
  return eo;
}

bool ParseSegmentName(const std::string& name, uint64_t* id) {
  if (name.size() != 24 || !name.ends_with(".seg")) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  *id = v;
  return true;
}

}  // namespace

LogBatch::LogBatch() : buf_(kHeaderBytes, '\0') {}

void LogBatch::Op(uint8_t type, uint64_t group) {
  buf_.push_back(static_cast<char>(type));
  PutVarint(&buf_, group);
  ++ops_;
}

void LogBatch::DropGroup(uint64_t group) { Op(kDropGroup, group); }
void LogBatch::DropEntries(uint64_t group) { Op(kDropEntries, group); }

void LogBatch::Truncate(uint64_t group, uint64_t from) {
  Op(kTruncate, group);
  PutVarint(&buf_, from);
}

void LogBatch::SetState(uint64_t group, std::string_view state) {
  Op(kSetState, group);
  PutVarint(&buf_, state.size());
  buf_.append(state);
}

char* LogBatch::Append(uint64_t group, uint64_t index, size_t size) {
  Op(kAppend, group);
  PutVarint(&buf_, index);
  PutVarint(&buf_, size);
  size_t at = buf_.size();
  buf_.resize(at + size);
  return buf_.data() + at;
}

void LogBatch::Append(uint64_t group, uint64_t index, std::string_view bytes) {
  char* p = Append(group, index, bytes.size());
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
}

LogEngine::LogEngine(LogEngineOptions options)
    : options_(std::move(options)),
      env_(options_.env != nullptr ? options_.env : rocksdb::Env::Default()) {}

LogEngine::~LogEngine() {
  absl::MutexLock lock(&mu_);
  if (active_) (void)active_->Close();
}

absl::StatusOr<std::unique_ptr<LogEngine>> LogEngine::Open(LogEngineOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("raft log: no directory");
  std::unique_ptr<LogEngine> engine(new LogEngine(std::move(options)));
  if (auto s = engine->Replay(); !s.ok()) return s;
  absl::MutexLock lock(&engine->mu_);
  if (auto s = engine->StartSegment(); !s.ok()) return s;
  // Each start begins a segment: without this, a node restarted often with little traffic
  // would keep every segment its idle groups pin.
  engine->NoteRewrites();
  return engine;
}

std::string LogEngine::SegmentPath(uint64_t id) const {
  return absl::StrFormat("%s/%020u.seg", options_.dir, id);
}

absl::Status LogEngine::Replay() {
  const std::string& dir = options_.dir;
  if (auto s = FromRocks(env_->CreateDirIfMissing(dir), "creating " + dir); !s.ok()) return s;
  std::vector<std::string> children;
  if (auto s = FromRocks(env_->GetChildren(dir, &children), "listing " + dir); !s.ok()) return s;
  std::vector<uint64_t> ids;
  for (const auto& name : children) {
    uint64_t id;
    if (ParseSegmentName(name, &id)) {
      ids.push_back(id);
    } else if (name.ends_with(".seg.tmp")) {
      (void)env_->DeleteFile(dir + "/" + name);  // a cut that did not finish
    }
  }
  std::sort(ids.begin(), ids.end());
  absl::MutexLock lock(&mu_);
  if (auto s = FromRocks(env_->NewDirectory(dir, &dir_handle_), "opening " + dir); !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    bool newest = i + 1 == ids.size();
    uint64_t valid = 0;
    if (auto s = ReplaySegment(ids[i], newest, &valid); !s.ok()) return s;
    uint64_t size = 0;
    if (auto s = FromRocks(env_->GetFileSize(SegmentPath(ids[i]), &size), "sizing a segment");
        !s.ok()) {
      return s;
    }
    if (newest && valid < kMagic.size()) {
      // Created by the crash's last boot or rotation, never synced: nothing in it counts.
      torn_bytes_dropped_ = size;
      if (auto s = FromRocks(env_->DeleteFile(SegmentPath(ids[i])), "deleting a torn segment");
          !s.ok()) {
        return s;
      }
      continue;
    }
    if (newest && valid < size) {
      torn_bytes_dropped_ = size - valid;
      if (auto s = CutTo(ids[i], valid); !s.ok()) return s;
      size = valid;
    }
    segments_.push_back({ids[i], size});
    disk_bytes_.fetch_add(size, std::memory_order_relaxed);
  }
  // Everything replayed is on disk: whatever dies from here on may be deleted.
  maybe_dead_ = true;
  return absl::OkStatus();
}

absl::Status LogEngine::ReplaySegment(uint64_t id, bool newest, uint64_t* valid_bytes) {
  std::string path = SegmentPath(id);
  std::unique_ptr<rocksdb::SequentialFile> file;
  if (auto s = FromRocks(env_->NewSequentialFile(path, &file, FileOptions()), "opening " + path);
      !s.ok()) {
    return s;
  }
  std::string data;
  std::string scratch(1 << 20, '\0');
  while (true) {
    rocksdb::Slice chunk;
    if (auto s = FromRocks(file->Read(scratch.size(), &chunk, scratch.data()), "reading " + path);
        !s.ok()) {
      return s;
    }
    if (chunk.empty()) break;
    data.append(chunk.data(), chunk.size());
  }
  auto damaged = [&](uint64_t at, const char* what) -> absl::Status {
    if (newest) {  // a write a crash cut short: it was never acknowledged
      *valid_bytes = at;
      return absl::OkStatus();
    }
    return absl::DataLossError(absl::StrCat("raft log segment ", path, " is damaged at byte ", at,
                                            " (", what, ") and a newer segment exists"));
  };
  if (data.size() < kMagic.size() || std::string_view(data).substr(0, kMagic.size()) != kMagic) {
    return damaged(0, "no segment header");
  }
  uint64_t at = kMagic.size();
  while (at < data.size()) {
    if (data.size() - at < kHeaderBytes) return damaged(at, "a record header cut short");
    uint32_t length = DecodeFixed32(data.data() + at);
    uint32_t crc = DecodeFixed32(data.data() + at + 4);
    if (length == 0 || length > kMaxRecordBytes || length > data.size() - at - kHeaderBytes) {
      return damaged(at, "a record cut short or a bad length");
    }
    std::string_view payload(data.data() + at + kHeaderBytes, length);
    if (RecordCrc(std::string_view(data.data() + at, 4), payload) != crc) {
      return damaged(at, "checksum mismatch");
    }
    if (auto s = ApplyOps(payload, id, /*replaying=*/true); !s.ok()) {
      return absl::DataLossError(
          absl::StrCat("raft log segment ", path, " at byte ", at, ": ", s.message()));
    }
    at += kHeaderBytes + length;
  }
  *valid_bytes = at;
  return absl::OkStatus();
}

absl::Status LogEngine::CutTo(uint64_t id, uint64_t valid_bytes) {
  // Rewrites the valid prefix and renames it over the damaged file, so that the damage is never
  // read again (the file becomes an older segment, where damage would be an error).
  std::string path = SegmentPath(id);
  std::string tmp = path + ".tmp";
  std::string data;
  {
    std::unique_ptr<rocksdb::SequentialFile> in;
    if (auto s = FromRocks(env_->NewSequentialFile(path, &in, FileOptions()), "opening " + path);
        !s.ok()) {
      return s;
    }
    data.resize(valid_bytes);
    rocksdb::Slice got;
    if (auto s = FromRocks(in->Read(valid_bytes, &got, data.data()), "reading " + path); !s.ok()) {
      return s;
    }
    if (got.size() != valid_bytes) return absl::DataLossError("raft log: short read of " + path);
    if (got.data() != data.data()) data.assign(got.data(), got.size());
  }
  std::unique_ptr<rocksdb::WritableFile> out;
  if (auto s = FromRocks(env_->NewWritableFile(tmp, &out, FileOptions()), "creating " + tmp);
      !s.ok()) {
    return s;
  }
  rocksdb::Status s = out->Append(rocksdb::Slice(data.data(), data.size()));
  if (s.ok()) s = out->Sync();
  if (s.ok()) s = out->Close();
  if (s.ok()) s = env_->RenameFile(tmp, path);
  if (s.ok()) s = dir_handle_->Fsync();
  return FromRocks(s, "cutting the torn tail of " + path);
}

absl::Status LogEngine::StartSegment() {
  uint64_t id = segments_.empty() ? 1 : segments_.back().id + 1;
  if (active_) {
    if (unsynced_) {
      // A newer segment must never be durable ahead of an older one's tail.
      if (auto s = FromRocks(active_->Sync(), "syncing a segment"); !s.ok()) return s;
      syncs_.fetch_add(1, std::memory_order_relaxed);
      unsynced_ = false;
    }
    (void)active_->Close();
    active_.reset();
  }
  std::string path = SegmentPath(id);
  if (auto s = FromRocks(env_->NewWritableFile(path, &active_, FileOptions()), "creating " + path);
      !s.ok()) {
    return s;
  }
  if (auto s = FromRocks(dir_handle_->Fsync(), "syncing " + options_.dir); !s.ok()) return s;
  if (auto s = FromRocks(active_->Append(rocksdb::Slice(kMagic.data(), kMagic.size())),
                         "writing " + path);
      !s.ok()) {
    return s;
  }
  segments_.push_back({id, kMagic.size()});
  disk_bytes_.fetch_add(kMagic.size(), std::memory_order_relaxed);
  segment_count_.store(segments_.size(), std::memory_order_relaxed);
  unsynced_ = true;
  // Every group's state again, first in the segment: no older segment is needed for them.
  LogBatch checkpoint;
  for (const auto& [group, account] : accounts_) {
    if (account.state) checkpoint.SetState(group, *account.state);
  }
  if (!checkpoint.empty()) {
    std::string& buf = checkpoint.buf_;
    Seal(buf);
    if (auto s = AppendRecord(buf); !s.ok()) return s;
    if (auto s = ApplyOps(std::string_view(buf).substr(kHeaderBytes), id, false); !s.ok()) {
      return s;
    }
  }
  maybe_dead_ = true;
  return absl::OkStatus();
}

absl::Status LogEngine::AppendRecord(std::string_view record) {
  if (auto s =
          FromRocks(active_->Append(rocksdb::Slice(record.data(), record.size())), "appending");
      !s.ok()) {
    return s;
  }
  segments_.back().bytes += record.size();
  disk_bytes_.fetch_add(record.size(), std::memory_order_relaxed);
  bytes_written_.fetch_add(record.size(), std::memory_order_relaxed);
  unsynced_ = true;
  return absl::OkStatus();
}

absl::Status LogEngine::Write(LogBatch& batch, bool sync) {
  absl::MutexLock lock(&mu_);
  bool rotated = false;
  if (!batch.empty()) {
    // The header goes in the room at the front of the batch's buffer: the record is never copied.
    std::string& buf = batch.buf_;
    if (segments_.back().bytes > kMagic.size() &&
        segments_.back().bytes + buf.size() > options_.segment_bytes) {
      if (auto s = StartSegment(); !s.ok()) return s;
      rotated = true;
    }
    Seal(buf);
    if (auto s = AppendRecord(buf); !s.ok()) return s;
    writes_.fetch_add(1, std::memory_order_relaxed);
    if (auto s = ApplyOps(std::string_view(buf).substr(kHeaderBytes), segments_.back().id, false);
        !s.ok()) {
      return s;
    }
  }
  if (sync && unsynced_) {
    if (auto s = FromRocks(active_->Sync(), "syncing"); !s.ok()) return s;
    syncs_.fetch_add(1, std::memory_order_relaxed);
    unsynced_ = false;
  }
  if (rotated) NoteRewrites();
  // Only once the newest segment is synced: its checkpoint and records supersede the old ones.
  if (maybe_dead_ && !unsynced_ && segments_.size() > 1) return DeleteDeadSegments();
  return absl::OkStatus();
}

absl::Status LogEngine::ApplyOps(std::string_view ops, uint64_t segment, bool replaying) {
  while (!ops.empty()) {
    auto type = static_cast<uint8_t>(ops.front());
    ops.remove_prefix(1);
    uint64_t group;
    if (!GetVarint(&ops, &group)) return absl::DataLossError("an op without a group");
    GroupAccount& account = accounts_[group];
    RecoveredLog* log = replaying ? &recovered_[group] : nullptr;
    auto truncate_account = [&](uint64_t from) {
      while (!account.spans.empty() && account.spans.back().first >= from) {
        account.spans.pop_back();
      }
      if (!account.spans.empty() && account.spans.back().last >= from) {
        account.spans.back().last = from - 1;
      }
    };
    auto truncate_log = [&](uint64_t from) {
      if (!log || log->entries.empty()) return;
      if (from <= log->first_index) {
        log->entries.clear();
      } else if (from - log->first_index < log->entries.size()) {
        log->entries.resize(from - log->first_index);
      }
    };
    switch (type) {
      case kDropGroup:
        accounts_.erase(group);
        recovered_.erase(group);
        maybe_dead_ = true;
        break;
      case kDropEntries:
        account.spans.clear();
        if (log) log->entries.clear();
        maybe_dead_ = true;
        break;
      case kTruncate: {
        uint64_t from;
        if (!GetVarint(&ops, &from) || from == 0) return absl::DataLossError("a bad truncation");
        truncate_account(from);
        truncate_log(from);
        break;
      }
      case kSetState: {
        std::string_view state;
        if (!GetBytes(&ops, &state)) return absl::DataLossError("a state cut short");
        account.state = std::string(state);
        account.state_segment = segment;
        if (log) log->state = std::string(state);
        break;
      }
      case kAppend: {
        uint64_t index;
        std::string_view bytes;
        if (!GetVarint(&ops, &index) || index == 0 || !GetBytes(&ops, &bytes)) {
          return absl::DataLossError("an entry cut short");
        }
        if (!account.spans.empty() && index <= account.spans.back().last) truncate_account(index);
        if (!account.spans.empty() && account.spans.back().segment == segment &&
            account.spans.back().last + 1 == index) {
          account.spans.back().last = index;
        } else {
          account.spans.push_back({segment, index, index});
        }
        if (log) {
          truncate_log(index);
          if (!log->entries.empty() && index != log->first_index + log->entries.size()) {
            log->entries.clear();  // a gap: what came before cannot be part of this log
          }
          if (log->entries.empty()) log->first_index = index;
          log->entries.emplace_back(bytes);
        }
        break;
      }
      default:
        return absl::DataLossError(absl::StrCat("an unknown op ", type));
    }
  }
  return absl::OkStatus();
}

RecoveredLog LogEngine::TakeRecovered(uint64_t group) {
  absl::MutexLock lock(&mu_);
  auto it = recovered_.find(group);
  if (it == recovered_.end()) return {};
  RecoveredLog log = std::move(it->second);
  recovered_.erase(it);
  return log;
}

std::vector<uint64_t> LogEngine::UntakenGroups() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> groups;
  for (const auto& [group, log] : recovered_) groups.push_back(group);
  return groups;
}

void LogEngine::Compacted(uint64_t group, uint64_t index) {
  absl::MutexLock lock(&mu_);
  auto it = accounts_.find(group);
  if (it == accounts_.end()) return;
  GroupAccount& account = it->second;
  auto& spans = account.spans;
  while (!spans.empty() && spans.front().last <= index) {
    spans.pop_front();
    maybe_dead_ = true;
  }
  if (!spans.empty() && spans.front().first <= index) spans.front().first = index + 1;
}

void LogEngine::NoteRewrites() {
  if (segments_.size() <= options_.max_segments) return;
  uint64_t oldest = segments_.front().id;
  for (const auto& [group, account] : accounts_) {
    bool pins = (!account.spans.empty() && account.spans.front().segment == oldest) ||
                (account.state && account.state_segment == oldest);
    if (pins) rewrite_requests_.push_back(group);
  }
}

std::vector<uint64_t> LogEngine::TakeRewriteRequests() {
  absl::MutexLock lock(&mu_);
  return std::exchange(rewrite_requests_, {});
}

absl::Status LogEngine::DeleteDeadSegments() {
  maybe_dead_ = false;
  uint64_t needed = segments_.back().id;
  for (const auto& [group, account] : accounts_) {
    if (!account.spans.empty()) needed = std::min(needed, account.spans.front().segment);
    if (account.state) needed = std::min(needed, account.state_segment);
  }
  if (segments_.front().id >= needed) return absl::OkStatus();
  if (options_.before_delete) {
    if (auto s = options_.before_delete(); !s.ok()) return s;
  }
  while (segments_.size() > 1 && segments_.front().id < needed) {
    if (auto s = FromRocks(env_->DeleteFile(SegmentPath(segments_.front().id)), "deleting");
        !s.ok()) {
      return s;
    }
    disk_bytes_.fetch_sub(segments_.front().bytes, std::memory_order_relaxed);
    segments_.pop_front();
    segments_deleted_.fetch_add(1, std::memory_order_relaxed);
  }
  segment_count_.store(segments_.size(), std::memory_order_relaxed);
  return absl::OkStatus();
}

LogEngineStats LogEngine::stats() const {
  LogEngineStats s;
  s.segments = segment_count_.load(std::memory_order_relaxed);
  s.writes = writes_.load(std::memory_order_relaxed);
  s.syncs = syncs_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.segments_deleted = segments_deleted_.load(std::memory_order_relaxed);
  s.disk_bytes = disk_bytes_.load(std::memory_order_relaxed);
  s.torn_bytes_dropped = torn_bytes_dropped_;
  return s;
}

}  // namespace kv::storage
