#include "tests/raft/simulation.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <vector>

#include "raft/confchange.h"
#include "raft/raft.h"
#include "tests/support/linearizability.h"

namespace kv::raft::sim {
namespace {

using testing::Operation;

constexpr int kTickMs = 10;
// Node liveness beats travel as messages of this pseudo-group; a peer not heard from (by any
// message) for an election timeout has lapsed. Leaders go quiet after this long without work.
constexpr uint64_t kLivenessGroup = 1ull << 62;
constexpr uint64_t kLapseMs = 10 * kTickMs;
constexpr uint64_t kIdleBeforeQuiesceMs = 10 * kTickMs;

// KV_SIM_TRACE=1 prints the run's events (leaders, crashes, membership, applies).
bool Tracing() {
  static const bool on = std::getenv("KV_SIM_TRACE") != nullptr;
  return on;
}
#define SIM_TRACE(...)                                           \
  do {                                                           \
    if (Tracing()) {                                             \
      std::printf("[t=%lu] ", static_cast<unsigned long>(now_)); \
      std::printf(__VA_ARGS__);                                  \
      std::printf("\n");                                         \
    }                                                            \
  } while (0)

std::string ConfString(const raftpb::ConfState& c) {
  std::string s = "{";
  for (const auto& m : c.voters()) s += std::to_string(m.id()) + " ";
  s += "| ";
  for (const auto& m : c.learners()) s += std::to_string(m.id()) + " ";
  if (c.voters_outgoing_size() > 0) {
    s += "| outgoing ";
    for (const auto& m : c.voters_outgoing()) s += std::to_string(m.id()) + " ";
  }
  return s + "}";
}
constexpr uint64_t kSnapshotContextBase = 1ull << 40;

// What a node has made durable: survives crashes.
struct Durable {
  raftpb::HardState hard_state;
  raftpb::SnapshotMeta snapshot;
  std::map<uint64_t, raftpb::Entry> entries;
  // The state machine (applied synchronously with persistence in this model).
  std::map<std::string, std::string> data;
  uint64_t applied = 0;
  uint64_t applied_term = 0;
  raftpb::ConfState conf;
};

struct Snapshot {
  raftpb::SnapshotMeta meta;
  std::map<std::string, std::string> data;
};

struct PendingWrite {
  size_t op;
  uint64_t index, term;
};
struct PendingRead {
  size_t op;
  std::string key;
  uint64_t read_index = 0;  // 0 until the read index is known
};

struct Node {
  uint64_t id;
  std::unique_ptr<Raft> raft;
  Durable disk;
  bool up = true;
  std::map<uint64_t, PendingWrite> writes_by_index;
  std::map<uint64_t, PendingRead> reads;  // request id -> read
  std::optional<Snapshot> incoming_snapshot;
  // Quiescence: when each peer was last heard from, peers whose liveness lapsed, and when the
  // group last had work here.
  std::map<uint64_t, uint64_t> heard;
  std::set<uint64_t> lapsed;
  uint64_t last_activity = 0;
  bool was_quiesced = false;
};

struct InFlight {
  uint64_t deliver_at;
  uint64_t seq;
  raftpb::Message msg;
  bool operator<(const InFlight& o) const {
    return deliver_at != o.deliver_at ? deliver_at < o.deliver_at : seq < o.seq;
  }
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& o) : o_(o), rng_(o.seed) {
    raftpb::ConfState initial;
    for (int i = 1; i <= o.initial_voters; ++i) {
      auto* m = initial.add_voters();
      m->set_id(static_cast<uint64_t>(i));
      m->set_address("sim-" + std::to_string(i));
    }
    for (int i = 1; i <= o.pool; ++i) {
      auto node = std::make_unique<Node>();
      node->id = static_cast<uint64_t>(i);
      // Initial voters bootstrap with the same membership; the others start empty and wait.
      if (i <= o.initial_voters) {
        BootstrapState b = Bootstrap(initial);
        node->disk.hard_state = b.hard_state;
        node->disk.snapshot = b.snapshot;
        for (auto& e : b.entries) node->disk.entries[e.index()] = e;
      }
      nodes_.push_back(std::move(node));
      Boot(*nodes_.back());
    }
  }

  SimResult Run() {
    for (int step = 0; step < o_.steps && result_.ok; ++step) {
      now_ += 1;
      Step();
      CheckInvariants();
    }
    // Liveness phase: heal everything, restart everyone, and require progress.
    if (result_.ok) {
      cut_.clear();
      mute_.clear();
      for (auto& n : nodes_) {
        if (!n->up) Boot(*n);
      }
      uint64_t before = MaxCommitted();
      for (int step = 0; step < 3000 && result_.ok; ++step) {
        now_ += 1;
        Deliver();
        if (now_ % kTickMs == 0) TickAll();
        if (step % 50 == 0) {
          // Untracked writes: the liveness phase needs commands even when the checked
          // history has reached its per-key bound.
          if (Node* l = Leader(); l && l->raft->Propose("liveness=" + std::to_string(step)).ok()) {
            Process(*l);
          }
        }
        CheckInvariants();
        if (MaxCommitted() > before + 3) break;
      }
      if (result_.ok && MaxCommitted() <= before) {
        Fail("liveness: no progress after healing the network and restarting all nodes");
      }
    }
    if (result_.ok) {
      std::vector<Operation> effective;
      for (size_t i = 0; i < history_.size(); ++i) {
        bool unanswered_read = history_[i].kind == Operation::Kind::kGet &&
                               history_[i].complete == Operation::kUnknown;
        if (!dropped_ops_.contains(i) && !unanswered_read) effective.push_back(history_[i]);
      }
      auto check = testing::CheckLinearizable(effective);
      if (!check.ok) Fail("linearizability: " + check.explanation);
    }
    result_.committed = MaxCommitted();
    result_.client_ops = static_cast<int>(history_.size());
    return result_;
  }

 private:
  double Uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  uint64_t Pick(uint64_t n) { return rng_() % n; }
  Node& NodeById(uint64_t id) { return *nodes_[id - 1]; }

  void Fail(const std::string& what) {
    if (!result_.ok) return;
    result_.ok = false;
    std::ostringstream out;
    out << what << " (at time " << now_ << ")";
    result_.failure = out.str();
  }

  void Boot(Node& n) {
    Config cfg;
    cfg.id = n.id;
    cfg.group_id = 1;
    cfg.election_tick = 10;
    cfg.heartbeat_tick = 1;
    cfg.max_inflight = 8;
    cfg.max_append_bytes = 256;
    cfg.seed = o_.seed * 131 + n.id * 7 + static_cast<uint64_t>(boots_++);
    n.raft = std::make_unique<Raft>(cfg);
    std::vector<raftpb::Entry> entries;
    for (const auto& [i, e] : n.disk.entries) entries.push_back(e);
    n.raft->Restore(n.disk.hard_state, n.disk.snapshot, std::move(entries), n.disk.applied);
    n.raft->SetApplied(n.disk.applied);
    n.up = true;
    SIM_TRACE("boot node %lu term=%lu last=%lu applied=%lu conf=%s", (unsigned long)n.id,
              (unsigned long)n.raft->term(), (unsigned long)n.raft->last_index(),
              (unsigned long)n.disk.applied, ConfString(n.raft->conf()).c_str());
    n.writes_by_index.clear();
    n.reads.clear();
    n.incoming_snapshot.reset();
    n.heard.clear();
    for (const auto& other : nodes_) n.heard[other->id] = now_;
    n.lapsed.clear();
    n.last_activity = now_;
    n.was_quiesced = false;
  }

  void Crash(Node& n) {
    if (!n.up) return;
    SIM_TRACE("crash node %lu", (unsigned long)n.id);
    // Half the time the node dies while persisting a Ready: that Ready is lost entirely.
    if (Uniform() < 0.5 && n.raft->HasReady()) (void)n.raft->GetReady();
    n.up = false;
    // Its in-flight client operations end with unknown outcome (writes) or are dropped (reads).
    n.writes_by_index.clear();
    for (auto& [id, r] : n.reads) dropped_ops_.insert(r.op);
    n.reads.clear();
  }

  void Step() {
    double r = Uniform();
    if (r < o_.crash) {
      Node& n = NodeById(1 + Pick(nodes_.size()));
      if (n.up) {
        Crash(n);
      } else {
        Boot(n);
      }
    } else if (r < o_.crash + o_.partition) {
      if ((!cut_.empty() || !mute_.empty()) && Uniform() < 0.5) {
        cut_.clear();
        mute_.clear();
      } else if (Uniform() < 0.3) {
        // One-way: the node still hears everyone, but nobody hears it (a leader that keeps hearing
        // its followers' beats while they stop hearing it).
        mute_.insert(1 + Pick(nodes_.size()));
      } else {
        cut_.insert(1 + Pick(nodes_.size()));
      }
    } else if (r < o_.crash + o_.partition + o_.membership) {
      ChangeMembership();
    }
    // Restart crashed nodes after a while so the run keeps a quorum most of the time.
    for (auto& n : nodes_) {
      if (!n->up && Uniform() < 0.01) Boot(*n);
    }
    // With quiescence, load comes in bursts: quiet gaps long enough for groups to go quiet.
    bool quiet_gap = o_.quiesce && (now_ / 1500) % 2 == 1;
    if (!quiet_gap && Uniform() < 0.3) ClientOp();
    Deliver();
    if (now_ % kTickMs == 0) TickAll();
  }

  void TickAll() {
    for (auto& n : nodes_) {
      if (!n->up) continue;
      if (o_.quiesce) {
        TickQuiescing(*n);
      } else {
        n->raft->Tick();
      }
      Process(*n);
    }
  }

  // What the node driver does each tick with quiescence on: beat to every peer, wake the group
  // when a member's liveness lapses, tick only while awake, and let an idle leader go quiet.
  void TickQuiescing(Node& n) {
    std::vector<raftpb::Message> beats;
    for (const auto& other : nodes_) {
      if (other->id == n.id) continue;
      raftpb::Message beat;
      beat.set_type(raftpb::MSG_HEARTBEAT);
      beat.set_group_id(kLivenessGroup);
      beat.set_from(n.id);
      beat.set_to(other->id);
      beats.push_back(beat);
      bool lapsed = now_ - n.heard[other->id] > kLapseMs;
      if (lapsed && n.lapsed.insert(other->id).second && n.raft->quiesced() &&
          n.raft->IsMember(other->id)) {
        SIM_TRACE("node %lu wakes: node %lu lapsed", (unsigned long)n.id, (unsigned long)other->id);
        n.raft->Unquiesce();
      } else if (!lapsed) {
        n.lapsed.erase(other->id);
      }
    }
    SendAll(beats);
    if (n.was_quiesced && !n.raft->quiesced()) n.last_activity = now_;  // woken: work is near
    if (!n.raft->quiesced()) n.raft->Tick();
    // (Reads whose ReadIndex messages were lost stay in n.reads forever in this model; the
    // driver's have deadlines. The core refuses to go quiet while it has reads of its own.)
    if (n.raft->role() == Role::kLeader && !n.raft->quiesced() && n.writes_by_index.empty() &&
        now_ - n.last_activity >= kIdleBeforeQuiesceMs && n.raft->Quiesce(n.lapsed)) {
      ++result_.quiesces;
      SIM_TRACE("node %lu leader goes quiet at term %lu", (unsigned long)n.id,
                (unsigned long)n.raft->term());
    }
    n.was_quiesced = n.raft->quiesced();
  }

  bool Connected(uint64_t from, uint64_t to) const {
    return !cut_.contains(from) && !cut_.contains(to) && !mute_.contains(from);
  }

  void Deliver() {
    while (!network_.empty() && network_.begin()->deliver_at <= now_) {
      InFlight f = *network_.begin();
      network_.erase(network_.begin());
      Node& to = NodeById(f.msg.to());
      if (!to.up || !Connected(f.msg.from(), f.msg.to())) continue;
      to.heard[f.msg.from()] = now_;
      if (f.msg.group_id() == kLivenessGroup) continue;
      if (f.msg.type() == raftpb::MSG_SNAPSHOT) {
        auto it = snapshots_.find(f.msg.context());
        if (it == snapshots_.end()) continue;
        to.incoming_snapshot = it->second;
      }
      to.raft->Step(f.msg);
      Process(to);
    }
  }

  void SendAll(std::vector<raftpb::Message>& msgs) {
    for (auto& m : msgs) {
      if (Uniform() < o_.drop) continue;
      int copies = Uniform() < o_.duplicate ? 2 : 1;
      for (int c = 0; c < copies; ++c) {
        network_.insert(InFlight{now_ + 1 + Pick(30), seq_++, m});
      }
    }
  }

  // The driver: persist, send, apply, advance (raft.h's durability contract).
  void Process(Node& n) {
    while (n.up && n.raft->HasReady()) {
      Ready rd = n.raft->GetReady();
      Durable& d = n.disk;
      if (rd.snapshot) {
        if (!n.incoming_snapshot || n.incoming_snapshot->meta.index() != rd.snapshot->index()) {
          Fail("a snapshot was accepted without its data");
          return;
        }
        d.data = n.incoming_snapshot->data;
        d.applied = rd.snapshot->index();
        d.applied_term = rd.snapshot->term();
        d.conf = rd.snapshot->conf();
        d.snapshot = *rd.snapshot;
        d.entries.clear();
        ++result_.snapshots_installed;
        SIM_TRACE("node %lu installs snapshot %lu conf=%s", (unsigned long)n.id,
                  (unsigned long)rd.snapshot->index(), ConfString(rd.snapshot->conf()).c_str());
        n.writes_by_index.clear();
      }
      if (rd.truncate_from != 0)
        d.entries.erase(d.entries.lower_bound(rd.truncate_from), d.entries.end());
      for (const auto& e : rd.entries) {
        d.entries.erase(d.entries.lower_bound(e.index()), d.entries.end());
        d.entries[e.index()] = e;
      }
      if (rd.hard_state) d.hard_state = *rd.hard_state;
      SendAll(rd.messages);
      for (const auto& e : rd.committed) Apply(n, e);
      if (rd.conf_state) d.conf = *rd.conf_state;
      n.raft->SetApplied(d.applied);
      for (const auto& rs : rd.read_states) {
        auto it = n.reads.find(rs.request_id);
        if (it != n.reads.end()) it->second.read_index = std::max<uint64_t>(rs.index, 1);
      }
      for (uint64_t id : rd.failed_reads) {
        auto it = n.reads.find(id);
        if (it == n.reads.end()) continue;
        dropped_ops_.insert(it->second.op);
        n.reads.erase(it);
      }
      for (uint64_t peer : rd.snapshot_requests) SendSnapshot(n, peer);
      n.raft->Advance(rd);
      ServeReads(n);
      MaybeCompact(n);
    }
  }

  void Apply(Node& n, const raftpb::Entry& e) {
    Durable& d = n.disk;
    if (e.index() != d.applied + 1) {
      Fail("node " + std::to_string(n.id) + " applied index " + std::to_string(e.index()) +
           " after " + std::to_string(d.applied));
      return;
    }
    // State machine safety: every node applies the same entry at each index.
    auto [it, fresh] = applied_.emplace(e.index(), std::make_pair(e.term(), e.data()));
    if (!fresh && (it->second.first != e.term() || it->second.second != e.data())) {
      Fail("state machine safety: nodes applied different entries at index " +
           std::to_string(e.index()));
      return;
    }
    d.applied = e.index();
    d.applied_term = e.term();
    SIM_TRACE("node %lu applies %lu (term %lu) %s%s", (unsigned long)n.id, (unsigned long)e.index(),
              (unsigned long)e.term(), e.type() == raftpb::ENTRY_CONF_CHANGE ? "CONF " : "",
              e.type() == raftpb::ENTRY_CONF_CHANGE ? "" : e.data().c_str());
    if (e.type() == raftpb::ENTRY_NORMAL && !e.data().empty()) {
      // data = "key=value"
      auto eq = e.data().find('=');
      d.data[e.data().substr(0, eq)] = e.data().substr(eq + 1);
    }
    auto w = n.writes_by_index.find(e.index());
    if (w != n.writes_by_index.end()) {
      if (w->second.term == e.term()) {
        history_[w->second.op].complete = now_;
      } else {
        dropped_ops_.insert(w->second.op);  // overwritten: never applied
      }
      n.writes_by_index.erase(w);
    }
  }

  void ServeReads(Node& n) {
    for (auto it = n.reads.begin(); it != n.reads.end();) {
      PendingRead& r = it->second;
      if (r.read_index == 0 || n.disk.applied < r.read_index) {
        ++it;
        continue;
      }
      auto v = n.disk.data.find(r.key);
      history_[r.op].value =
          v == n.disk.data.end() ? std::nullopt : std::optional<std::string>(v->second);
      history_[r.op].complete = now_;
      it = n.reads.erase(it);
    }
  }

  void SendSnapshot(Node& leader, uint64_t peer) {
    Snapshot s;
    s.meta.set_index(leader.disk.applied);
    s.meta.set_term(leader.disk.applied_term);
    *s.meta.mutable_conf() = leader.disk.conf;
    s.data = leader.disk.data;
    uint64_t id = kSnapshotContextBase + seq_;
    snapshots_[id] = s;
    raftpb::Message m;
    m.set_type(raftpb::MSG_SNAPSHOT);
    m.set_group_id(1);
    m.set_from(leader.id);
    m.set_to(peer);
    m.set_term(leader.raft->term());
    m.set_context(id);
    *m.mutable_snapshot() = s.meta;
    std::vector<raftpb::Message> msgs = {m};
    SendAll(msgs);
    leader.raft->ReportSnapshot(peer, true);
  }

  void MaybeCompact(Node& n) {
    uint64_t applied = n.disk.applied;
    if (applied < n.raft->first_index() + 30) return;
    auto meta = n.raft->Compact(applied - 10);
    if (!meta) return;
    n.disk.snapshot = *meta;
    n.disk.entries.erase(n.disk.entries.begin(), n.disk.entries.upper_bound(meta->index()));
  }

  Node* Leader() {
    Node* best = nullptr;
    for (auto& n : nodes_) {
      if (n->up && n->raft->role() == Role::kLeader &&
          (!best || n->raft->term() > best->raft->term())) {
        best = n.get();
      }
    }
    return best;
  }

  void ClientOp() {
    Node& n = NodeById(1 + Pick(nodes_.size()));
    if (!n.up) return;
    n.last_activity = now_;
    std::string key = "k" + std::to_string(Pick(8));
    if (per_key_ops_[key] >= 40) return;  // bound the checker's work per key
    Operation op;
    op.key = key;
    op.invoke = now_;
    op.complete = Operation::kUnknown;
    if (Uniform() < 0.5) {
      op.kind = Operation::Kind::kPut;
      op.value = "v" + std::to_string(next_value_++);
      auto r = n.raft->Propose(key + "=" + *op.value);
      if (!r.ok()) return;
      ++per_key_ops_[key];
      history_.push_back(op);
      n.writes_by_index[r->first] = PendingWrite{history_.size() - 1, r->first, r->second};
    } else {
      op.kind = Operation::Kind::kGet;
      ++per_key_ops_[key];
      history_.push_back(op);
      uint64_t id = ++read_ids_;
      PendingRead read{history_.size() - 1, key, 0};
      if (o_.lease_reads && n.raft->HasLease() && Uniform() < 0.5) {
        read.read_index = std::max<uint64_t>(n.raft->commit(), 1);
        n.reads[id] = read;
        ServeReads(n);
      } else {
        n.reads[id] = read;
        n.raft->ReadIndex(id);
      }
    }
    Process(n);
  }

  void ChangeMembership() {
    Node* leader = Leader();
    if (!leader) return;
    const auto& conf = leader->raft->conf();
    raftpb::ConfChange cc;
    if (conf.learners_size() > 0 && Uniform() < 0.4) {
      // A joint change: swap one or two voters for learners in one step (a replica move).
      std::vector<raftpb::Member> incoming(conf.voters().begin(), conf.voters().end());
      int swaps = 1 + static_cast<int>(Pick(2));
      for (int i = 0; i < swaps && i < conf.learners_size(); ++i) {
        incoming.erase(incoming.begin() + static_cast<ptrdiff_t>(Pick(incoming.size())));
        incoming.push_back(conf.learners(i));
      }
      if (Uniform() < 0.3 && incoming.size() > 1) incoming.pop_back();  // and shrink
      cc.set_type(raftpb::CONF_ENTER_JOINT);
      for (const auto& m : incoming) *cc.add_voters() = m;
      if (auto p = leader->raft->ProposeConfChange(cc); p.ok()) {
        SIM_TRACE("node %lu proposes a joint change to %d voters at %lu", (unsigned long)leader->id,
                  cc.voters_size(), (unsigned long)p->first);
        ++result_.joint_changes;
        Process(*leader);
      }
      return;
    }
    uint64_t target = 1 + Pick(nodes_.size());
    if (!leader->raft->IsMember(target)) {
      cc.set_type(raftpb::CONF_ADD_LEARNER);
      // Each node has an address of its own (a member's address is never given to another).
      cc.set_address("sim-" + std::to_string(target));
    } else if (!leader->raft->IsVoter(target)) {
      cc.set_type(Uniform() < 0.8 ? raftpb::CONF_PROMOTE_LEARNER : raftpb::CONF_REMOVE_NODE);
    } else if (conf.voters_size() > 3) {
      cc.set_type(raftpb::CONF_REMOVE_NODE);
    } else {
      return;
    }
    cc.set_node_id(target);
    if (auto p = leader->raft->ProposeConfChange(cc); p.ok()) {
      SIM_TRACE("node %lu proposes conf change type %d node %lu at %lu", (unsigned long)leader->id,
                (int)cc.type(), (unsigned long)target, (unsigned long)p->first);
      Process(*leader);
    }
  }

  uint64_t MaxCommitted() const { return applied_.empty() ? 0 : applied_.rbegin()->first; }

  void CheckInvariants() {
    if (!result_.ok) return;
    for (auto& n : nodes_) {
      if (!n->up) continue;
      const Raft& r = *n->raft;
      // Election safety: at most one leader per term, ever.
      if (r.role() == Role::kLeader) {
        auto [it, fresh] = leaders_.emplace(r.term(), n->id);
        if (fresh) {
          ++result_.elections;
          SIM_TRACE("node %lu leads term %lu last=%lu commit=%lu conf=%s", (unsigned long)n->id,
                    (unsigned long)r.term(), (unsigned long)r.last_index(),
                    (unsigned long)r.commit(), ConfString(r.conf()).c_str());
        }
        if (it->second != n->id) {
          Fail("election safety: nodes " + std::to_string(it->second) + " and " +
               std::to_string(n->id) + " both led term " + std::to_string(r.term()));
          return;
        }
        // Leader completeness: a leader elected for term T holds every entry committed before
        // its election (all in earlier terms). Checked once, when the leader first appears.
        for (auto a = applied_.upper_bound(r.log().snap_index()); fresh && a != applied_.end();
             ++a) {
          auto t = r.log().Term(a->first);
          if (!t || *t != a->second.first || r.log().At(a->first).data() != a->second.second) {
            Fail("leader completeness: leader " + std::to_string(n->id) + " of term " +
                 std::to_string(r.term()) + " lacks committed entry " + std::to_string(a->first));
            return;
          }
        }
      }
    }
    // Joint consensus: while a leader's configuration is joint, what it newly commits is durable
    // on a majority of the incoming voters and on a majority of the outgoing ones.
    for (auto& n : nodes_) {
      const Raft& r = *n->raft;
      if (!n->up || r.role() != Role::kLeader || r.conf().voters_outgoing_size() == 0) continue;
      auto [since, fresh] =
          joint_since_.emplace(std::make_pair(r.term(), r.conf().index()), r.commit());
      if (fresh || r.commit() <= since->second) continue;
      uint64_t c = r.commit();
      uint64_t term = *r.log().Term(c);
      auto durable = [&](uint64_t id) -> uint64_t {
        const Node& holder = *nodes_[id - 1];
        if (holder.disk.snapshot.index() >= c) return 1;
        auto e = holder.disk.entries.find(c);
        return e != holder.disk.entries.end() && e->second.term() == term ? 1 : 0;
      };
      QuorumConfig q = QuorumOf(r.conf());
      for (const MajorityConfig* set : {&q.incoming(), &q.outgoing()}) {
        if (set->QuorumIndex(durable) == 0) {
          Fail("joint consensus: leader " + std::to_string(n->id) + " committed " +
               std::to_string(c) + " without a majority of both voter sets");
          return;
        }
      }
      ++result_.joint_commits_checked;
    }
    // Log matching: if two logs have an entry with the same index and term, the logs are
    // identical up to it. Checked from the top of the shared range down.
    for (size_t a = 0; a < nodes_.size(); ++a) {
      for (size_t b = a + 1; b < nodes_.size(); ++b) {
        const RaftLog& la = nodes_[a]->raft->log();
        const RaftLog& lb = nodes_[b]->raft->log();
        uint64_t lo = std::max(la.first_index(), lb.first_index());
        uint64_t hi = std::min(la.last_index(), lb.last_index());
        bool matched = false;
        for (uint64_t i = hi; i >= lo && i > 0; --i) {
          bool same_term = la.At(i).term() == lb.At(i).term();
          if (matched && !same_term) {
            Fail("log matching: nodes " + std::to_string(a + 1) + " and " + std::to_string(b + 1) +
                 " agree above index " + std::to_string(i) + " but differ at it");
            return;
          }
          if (same_term) {
            matched = true;
            if (la.At(i).data() != lb.At(i).data()) {
              Fail("log matching: same index and term, different data at " + std::to_string(i));
              return;
            }
          }
        }
      }
    }
  }

  SimOptions o_;
  std::mt19937_64 rng_;
  uint64_t now_ = 0;
  uint64_t seq_ = 0;
  int boots_ = 0;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::set<InFlight> network_;
  std::set<uint64_t> cut_;
  std::set<uint64_t> mute_;  // nodes whose messages are lost (they still hear everyone)
  std::map<uint64_t, Snapshot> snapshots_;
  std::map<uint64_t, uint64_t> leaders_;  // term -> leader
  // (term, conf index) of a joint configuration a leader had -> its commit when first seen.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> joint_since_;
  std::map<uint64_t, std::pair<uint64_t, std::string>> applied_;  // index -> (term, data)
  std::vector<Operation> history_;
  std::set<size_t> dropped_ops_;
  std::map<std::string, int> per_key_ops_;
  uint64_t next_value_ = 1;
  uint64_t read_ids_ = 0;
  SimResult result_;
};

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace kv::raft::sim
