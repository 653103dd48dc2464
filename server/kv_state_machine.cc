#include "server/kv_state_machine.h"

#include "absl/strings/str_cat.h"
#include "storage/keys.h"

namespace kv::server {
namespace {

using storage::Column;

// A client silent for this many log entries loses its dedup records; a retry arriving later
// than that is applied again. Bounds the table when clients (like kvctl) come and go.
constexpr uint64_t kSessionIdleEntries = 1'000'000;
constexpr size_t kMaxSessionsBeforeExpiry = 10'000;

std::string EncodeIndex(uint64_t index) {
  std::string out;
  storage::AppendBigEndian64(&out, index);
  return out;
}

}  // namespace

KvStateMachine::KvStateMachine(storage::Engine* engine, uint64_t group_id, uint64_t shard_id)
    : engine_(engine), group_id_(group_id), shard_id_(shard_id) {}

absl::Status KvStateMachine::Load() {
  auto applied = engine_->Get(Column::kMeta, storage::AppliedIndexKey(group_id_));
  if (!applied.ok()) return applied.status();
  uint64_t index = 0;
  if (applied->has_value()) {
    if ((*applied)->size() != 8) {
      return absl::DataLossError(
          absl::StrCat("applied index record of group ", group_id_, " is malformed"));
    }
    index = storage::ReadBigEndian64(**applied);
  }
  sessions_.clear();
  std::string prefix = storage::DedupPrefix(group_id_);
  auto it = engine_->NewIterator(Column::kMeta, prefix, storage::PrefixSuccessor(prefix));
  for (; it->Valid(); it->Next()) {
    auto id = storage::DedupIdOf(it->key());
    internal::CommandResult result;
    if (it->key().size() != 25 || !result.ParseFromArray(it->value().data(), it->value().size())) {
      return absl::DataLossError("dedup record is malformed");
    }
    auto& session = sessions_[id.client_id];
    session.last_index = std::max(session.last_index, result.version());
    session.results[id.seq] = std::move(result);
  }
  if (!it->status().ok()) return it->status();
  absl::MutexLock lock(&mu_);
  applied_index_ = index;
  return absl::OkStatus();
}

uint64_t KvStateMachine::applied_index() const {
  absl::MutexLock lock(&mu_);
  return applied_index_;
}

absl::StatusOr<std::optional<StoredValue>> KvStateMachine::ReadThrough(
    const Overlay& overlay, const std::string& data_key) const {
  if (auto it = overlay.find(data_key); it != overlay.end()) return it->second;
  auto raw = engine_->Get(Column::kData, data_key);
  if (!raw.ok()) return raw.status();
  if (!raw->has_value()) return std::optional<StoredValue>();
  auto decoded = storage::DecodeVersionedValue(**raw);
  if (!decoded) return absl::DataLossError("stored value is malformed");
  return std::optional<StoredValue>(StoredValue{std::string(decoded->value), decoded->version});
}

absl::StatusOr<internal::CommandResult> KvStateMachine::ApplyOne(uint64_t index,
                                                                 const internal::Command& cmd,
                                                                 Overlay* overlay,
                                                                 storage::WriteBatch* batch) {
  internal::CommandResult result;
  result.set_version(index);
  auto write = [&](const std::string& data_key, std::string_view value) {
    batch->Put(Column::kData, data_key, storage::EncodeVersionedValue(index, value));
    (*overlay)[data_key] = StoredValue{std::string(value), index};
  };
  switch (cmd.op_case()) {
    case internal::Command::kPut: {
      write(storage::DataKey(shard_id_, cmd.put().key()), cmd.put().value());
      result.set_succeeded(true);
      break;
    }
    case internal::Command::kDel: {
      std::string data_key = storage::DataKey(shard_id_, cmd.del().key());
      auto current = ReadThrough(*overlay, data_key);
      if (!current.ok()) return current.status();
      result.set_succeeded(true);
      result.set_existed(current->has_value());
      if (current->has_value()) {
        batch->Delete(Column::kData, data_key);
        (*overlay)[data_key] = std::nullopt;
      }
      break;
    }
    case internal::Command::kCas: {
      const auto& cas = cmd.cas();
      std::string data_key = storage::DataKey(shard_id_, cas.key());
      auto current = ReadThrough(*overlay, data_key);
      if (!current.ok()) return current.status();
      bool matches = cas.expect_absent()
                         ? !current->has_value()
                         : current->has_value() && (*current)->version == cas.expected_version();
      result.set_succeeded(matches);
      if (matches) {
        write(data_key, cas.value());
      } else {
        result.set_version(0);
        if (current->has_value()) {
          result.set_existed(true);
          result.set_current_value((*current)->value);
          result.set_current_version((*current)->version);
        }
      }
      break;
    }
    case internal::Command::OP_NOT_SET:
      // No-op entries (leader's first entry) change nothing.
      result.set_succeeded(true);
      break;
  }
  return result;
}

void KvStateMachine::ForgetAnswered(uint64_t client_id, ClientSession* session,
                                    uint64_t first_incomplete, storage::WriteBatch* batch) {
  if (first_incomplete <= session->first_incomplete_seq) return;
  session->first_incomplete_seq = first_incomplete;
  for (auto it = session->results.begin(); it != session->results.end();) {
    if (it->first < first_incomplete) {
      batch->Delete(Column::kMeta, storage::DedupKey(group_id_, client_id, it->first));
      session->results.erase(it++);
    } else {
      ++it;
    }
  }
}

void KvStateMachine::ExpireIdleSessions(uint64_t now_index, storage::WriteBatch* batch) {
  if (sessions_.size() < kMaxSessionsBeforeExpiry) return;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->second.last_index + kSessionIdleEntries < now_index) {
      for (const auto& [seq, unused] : it->second.results) {
        batch->Delete(Column::kMeta, storage::DedupKey(group_id_, it->first, seq));
      }
      sessions_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<std::vector<internal::CommandResult>> KvStateMachine::Apply(
    std::span<const IndexedCommand> commands, bool sync) {
  std::vector<internal::CommandResult> results;
  results.reserve(commands.size());
  if (commands.empty()) return results;
  storage::WriteBatch batch(*engine_);
  Overlay overlay;
  uint64_t expected = applied_index() + 1;
  for (const auto& ic : commands) {
    if (ic.index != expected) {
      return absl::InternalError(absl::StrCat("apply out of order: got index ", ic.index,
                                              ", expected ", expected));
    }
    ++expected;
    static const internal::Command kNoop;
    const internal::Command& cmd = ic.command ? *ic.command : kNoop;
    if (cmd.client_id() == 0) {
      auto r = ApplyOne(ic.index, cmd, &overlay, &batch);
      if (!r.ok()) return r.status();
      results.push_back(*std::move(r));
      continue;
    }
    auto& session = sessions_[cmd.client_id()];
    session.last_index = ic.index;
    if (auto hit = session.results.find(cmd.seq()); hit != session.results.end()) {
      results.push_back(hit->second);  // retried command: answer as the first time
      continue;
    }
    if (cmd.seq() < session.first_incomplete_seq) {
      // The client told us it already has this answer; it cannot be waiting for it.
      internal::CommandResult stale;
      stale.set_succeeded(false);
      results.push_back(stale);
      continue;
    }
    auto r = ApplyOne(ic.index, cmd, &overlay, &batch);
    if (!r.ok()) return r.status();
    session.results[cmd.seq()] = *r;
    batch.Put(Column::kMeta, storage::DedupKey(group_id_, cmd.client_id(), cmd.seq()),
              r->SerializeAsString());
    ForgetAnswered(cmd.client_id(), &session, cmd.first_incomplete_seq(), &batch);
    results.push_back(*std::move(r));
  }
  uint64_t last = commands.back().index;
  ExpireIdleSessions(last, &batch);
  batch.Put(Column::kMeta, storage::AppliedIndexKey(group_id_), EncodeIndex(last));
  if (auto s = engine_->Write(batch, sync); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  applied_index_ = last;
  return results;
}

absl::StatusOr<std::optional<StoredValue>> KvStateMachine::Get(std::string_view key) const {
  return ReadThrough({}, storage::DataKey(shard_id_, key));
}

absl::Status KvStateMachine::Scan(std::string_view start, std::string_view end, size_t limit,
                                  size_t max_bytes, bool keys_only, std::vector<ScanItem>* out,
                                  bool* more) const {
  *more = false;
  std::string lower = storage::DataKey(shard_id_, start);
  std::string upper =
      end.empty() ? storage::ShardEnd(shard_id_) : storage::DataKey(shard_id_, end);
  auto it = engine_->NewIterator(Column::kData, lower, upper);
  size_t bytes = 0;
  for (; it->Valid(); it->Next()) {
    if (out->size() >= limit || bytes >= max_bytes) {
      *more = true;
      break;
    }
    auto decoded = storage::DecodeVersionedValue(it->value());
    if (!decoded) return absl::DataLossError("stored value is malformed");
    ScanItem item;
    item.key.assign(storage::UserKeyOf(it->key()));
    if (!keys_only) item.value.assign(decoded->value);
    item.version = decoded->version;
    bytes += item.key.size() + item.value.size() + 16;
    out->push_back(std::move(item));
  }
  return it->status();
}

}  // namespace kv::server
