#include "raft/confchange.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace kv::raft {
namespace {

using Members = google::protobuf::RepeatedPtrField<raftpb::Member>;

bool Has(const Members& members, uint64_t id) {
  for (const auto& m : members) {
    if (m.id() == id) return true;
  }
  return false;
}

void Erase(Members* members, uint64_t id) {
  for (int i = 0; i < members->size(); ++i) {
    if (members->Get(i).id() == id) {
      members->DeleteSubrange(i, 1);
      return;
    }
  }
}

std::set<uint64_t> IdsOf(const Members& members) {
  std::set<uint64_t> ids;
  for (const auto& m : members) ids.insert(m.id());
  return ids;
}

}  // namespace

QuorumConfig QuorumOf(const raftpb::ConfState& conf) {
  return QuorumConfig(MajorityConfig(IdsOf(conf.voters())),
                      MajorityConfig(IdsOf(conf.voters_outgoing())));
}

std::vector<const raftpb::Member*> MembersOf(const raftpb::ConfState& conf) {
  std::vector<const raftpb::Member*> out;
  std::set<uint64_t> seen;
  for (const auto* list : {&conf.voters(), &conf.voters_outgoing(), &conf.learners()}) {
    for (const auto& m : *list) {
      if (seen.insert(m.id()).second) out.push_back(&m);
    }
  }
  return out;
}

bool IsVoterIn(const raftpb::ConfState& conf, uint64_t id) {
  return Has(conf.voters(), id) || Has(conf.voters_outgoing(), id);
}

bool IsMemberOf(const raftpb::ConfState& conf, uint64_t id) {
  return IsVoterIn(conf, id) || Has(conf.learners(), id);
}

absl::Status CheckConfChange(const raftpb::ConfState& conf, const raftpb::ConfChange& cc) {
  bool joint = conf.voters_outgoing_size() > 0;
  if (joint && cc.type() != raftpb::CONF_LEAVE_JOINT) {
    return absl::UnavailableError(
        "a joint membership change is in progress (the leader completes it); retry");
  }
  uint64_t id = cc.node_id();
  switch (cc.type()) {
    case raftpb::CONF_ADD_LEARNER:
      if (id == 0 || cc.address().empty()) {
        return absl::InvalidArgumentError("adding a node needs an id >= 1 and an address");
      }
      if (IsMemberOf(conf, id)) {
        return absl::AlreadyExistsError(absl::StrCat("node ", id, " is a member"));
      }
      for (const raftpb::Member* m : MembersOf(conf)) {
        if (m->address() == cc.address()) {
          return absl::AlreadyExistsError(
              absl::StrCat("address ", cc.address(), " is already used by node ", m->id()));
        }
      }
      return absl::OkStatus();
    case raftpb::CONF_PROMOTE_LEARNER:
      if (!Has(conf.learners(), id)) {
        return absl::FailedPreconditionError(absl::StrCat("node ", id, " is not a learner"));
      }
      return absl::OkStatus();
    case raftpb::CONF_REMOVE_NODE:
      if (!IsMemberOf(conf, id)) {
        return absl::NotFoundError(absl::StrCat("node ", id, " is not a member"));
      }
      if (Has(conf.voters(), id) && conf.voters_size() == 1) {
        return absl::FailedPreconditionError("cannot remove the last voter");
      }
      return absl::OkStatus();
    case raftpb::CONF_ENTER_JOINT: {
      if (cc.voters_size() == 0) {
        return absl::InvalidArgumentError("a joint change needs at least one incoming voter");
      }
      std::set<uint64_t> incoming;
      for (const auto& m : cc.voters()) {
        if (!incoming.insert(m.id()).second) {
          return absl::InvalidArgumentError(absl::StrCat("node ", m.id(), " is named twice"));
        }
        if (!IsMemberOf(conf, m.id())) {
          return absl::FailedPreconditionError(absl::StrCat(
              "node ", m.id(), " is not a member: add it as a learner and let it catch up first"));
        }
      }
      if (incoming == IdsOf(conf.voters())) {
        return absl::AlreadyExistsError("these are the voters already");
      }
      return absl::OkStatus();
    }
    case raftpb::CONF_LEAVE_JOINT:
      if (!joint) return absl::FailedPreconditionError("no joint membership change to leave");
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("unknown membership change");
  }
}

raftpb::ConfState ApplyConfChange(const raftpb::ConfState& conf, const raftpb::ConfChange& cc) {
  raftpb::ConfState out = conf;
  switch (cc.type()) {
    case raftpb::CONF_BOOTSTRAP:
      // Bootstrapped nodes already know these voters; a node that joined later learns them.
      if (conf.voters_size() == 0 && conf.learners_size() == 0) {
        *out.mutable_voters() = cc.initial_voters();
      }
      return out;
    case raftpb::CONF_FORCE_NEW_CLUSTER:
      // Operator recovery (kvd --force-new-cluster) after a permanent loss of quorum.
      *out.mutable_voters() = cc.initial_voters();
      out.clear_voters_outgoing();
      out.clear_learners();
      return out;
    default:
      break;
  }
  if (!CheckConfChange(conf, cc).ok()) return conf;
  uint64_t id = cc.node_id();
  switch (cc.type()) {
    case raftpb::CONF_ADD_LEARNER: {
      auto* m = out.add_learners();
      m->set_id(id);
      m->set_address(cc.address());
      break;
    }
    case raftpb::CONF_PROMOTE_LEARNER:
      for (const auto& m : conf.learners()) {
        if (m.id() == id) *out.add_voters() = m;
      }
      Erase(out.mutable_learners(), id);
      break;
    case raftpb::CONF_REMOVE_NODE:
      Erase(out.mutable_voters(), id);
      Erase(out.mutable_learners(), id);
      break;
    case raftpb::CONF_ENTER_JOINT: {
      *out.mutable_voters_outgoing() = conf.voters();
      out.clear_voters();
      for (const auto& m : cc.voters()) {
        raftpb::Member* added = out.add_voters();
        added->set_id(m.id());
        // The address the configuration knows wins over the one the change carries.
        for (const raftpb::Member* known : MembersOf(conf)) {
          if (known->id() == m.id()) *added = *known;
        }
        Erase(out.mutable_learners(), m.id());
      }
      break;
    }
    case raftpb::CONF_LEAVE_JOINT:
      out.clear_voters_outgoing();
      break;
    default:
      break;
  }
  return out;
}

}  // namespace kv::raft
