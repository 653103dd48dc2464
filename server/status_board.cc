#include "server/status_board.h"

#include "raft/confchange.h"

namespace kv::server {

bool SenderAllowed(const raftpb::ConfState& conf, const std::set<uint64_t>& removed,
                   const std::set<uint64_t>& vouched, uint64_t node, bool certified) {
  if (raft::MembersOf(conf).empty()) return true;
  if (raft::IsMemberOf(conf, node) || vouched.contains(node)) return true;
  return certified && !removed.contains(node);
}

StatusBoard::StatusBoard(uint64_t self_id, std::string self_client_address)
    : self_id_(self_id), self_client_address_(std::move(self_client_address)) {}

void StatusBoard::Publish(const GroupStatus& s, bool conf_changed) {
  absl::MutexLock lock(&mu_);
  GroupStatus& out = status_[s.group_id];
  raftpb::ConfState conf = conf_changed ? s.conf : std::move(out.conf);
  std::set<uint64_t> removed = conf_changed ? s.removed : std::move(out.removed);
  std::set<uint64_t> vouched = conf_changed ? s.vouched : std::move(out.vouched);
  std::string span_start = conf_changed ? s.span_start : std::move(out.span_start);
  std::string span_end = conf_changed ? s.span_end : std::move(out.span_end);
  uint64_t generation = conf_changed ? s.generation : out.generation;
  out = s;
  out.conf = std::move(conf);
  out.removed = std::move(removed);
  out.vouched = std::move(vouched);
  out.span_start = std::move(span_start);
  out.span_end = std::move(span_end);
  out.generation = generation;
  if (conf_changed) {
    for (const raftpb::Member* m : raft::MembersOf(out.conf)) addresses_[m->id()] = m->address();
  }
  // Clients are told the leader's client address (peers know each other by peer address).
  if (out.leader_id == self_id_) {
    out.leader_address = self_client_address_;
  } else {
    auto addr = client_addresses_.find(out.leader_id);
    out.leader_address = addr == client_addresses_.end() ? "" : addr->second;
  }
  auto& hint = hints_[s.group_id];
  if (!hint) hint = std::make_shared<LeaderHint>();
  bool leads = out.role == raft::Role::kLeader;
  absl::MutexLock hint_lock(&hint->mu);
  if (hint->leader_id.load(std::memory_order_relaxed) != out.leader_id ||
      hint->is_leader.load(std::memory_order_relaxed) != leads ||
      hint->address != out.leader_address) {
    hint->address = out.leader_address;
    hint->leader_id.store(out.leader_id, std::memory_order_relaxed);
    hint->is_leader.store(leads, std::memory_order_relaxed);
  }
}

void StatusBoard::Remove(uint64_t group_id) {
  absl::MutexLock lock(&mu_);
  status_.erase(group_id);
  if (auto it = hints_.find(group_id); it != hints_.end()) {
    it->second->is_leader.store(false, std::memory_order_relaxed);
    it->second->leader_id.store(0, std::memory_order_relaxed);
    hints_.erase(it);
  }
}

void StatusBoard::SetAddress(uint64_t node_id, const std::string& peer_address) {
  absl::MutexLock lock(&mu_);
  addresses_[node_id] = peer_address;
}

void StatusBoard::LearnClientAddress(uint64_t node_id, std::string client_address) {
  if (client_address.empty() || client_address.size() > 255) return;
  absl::MutexLock lock(&mu_);
  auto& known = client_addresses_[node_id];
  if (known != client_address) known = std::move(client_address);
}

GroupStatus StatusBoard::Status(uint64_t group_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = status_.find(group_id);
  return it == status_.end() ? GroupStatus{} : it->second;
}

std::vector<uint64_t> StatusBoard::GroupIds() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<uint64_t> ids;
  for (const auto& [id, s] : status_) ids.push_back(id);
  return ids;
}

bool StatusBoard::Hosts(uint64_t group_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return status_.contains(group_id);
}

uint64_t StatusBoard::HostedGroupFor(std::string_view encoded_key) const {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [id, s] : status_) {
    if (encoded_key >= s.span_start && encoded_key < s.span_end) return id;
  }
  return 0;
}

bool StatusBoard::IsMemberOf(uint64_t group_id, uint64_t node) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = status_.find(group_id);
  if (it == status_.end()) return false;
  return raft::IsMemberOf(it->second.conf, node);
}

bool StatusBoard::MayReceiveFrom(uint64_t group_id, uint64_t node, bool certified) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = status_.find(group_id);
  return it != status_.end() &&
         SenderAllowed(it->second.conf, it->second.removed, it->second.vouched, node, certified);
}

bool StatusBoard::Refuses(uint64_t group_id, uint64_t node, bool certified) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = status_.find(group_id);
  return it != status_.end() &&
         !SenderAllowed(it->second.conf, it->second.removed, it->second.vouched, node, certified);
}

std::shared_ptr<const StatusBoard::LeaderHint> StatusBoard::Hint(uint64_t group_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = hints_.find(group_id);
  return it == hints_.end() ? nullptr : it->second;
}

bool StatusBoard::IsLeader(uint64_t group_id) const {
  auto h = Hint(group_id);
  return h && h->is_leader.load(std::memory_order_relaxed);
}

uint64_t StatusBoard::LeaderId(uint64_t group_id) const {
  auto h = Hint(group_id);
  return h ? h->leader_id.load(std::memory_order_relaxed) : 0;
}

std::string StatusBoard::LeaderAddress(uint64_t group_id) const {
  auto h = Hint(group_id);
  if (!h) return "";
  absl::MutexLock lock(&h->mu);
  return h->address;
}

std::string StatusBoard::AddressOf(uint64_t node_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = addresses_.find(node_id);
  return it == addresses_.end() ? "" : it->second;
}

std::string StatusBoard::ClientAddressOf(uint64_t node_id) const {
  if (node_id == self_id_) return self_client_address_;
  absl::ReaderMutexLock lock(&mu_);
  auto it = client_addresses_.find(node_id);
  return it == client_addresses_.end() ? "" : it->second;
}

}  // namespace kv::server
