#include "tests/server/node_simulation.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/confchange.h"
#include "server/metadata.h"
#include "server/raft_driver.h"
#include "server/raft_replica.h"
#include "server/raft_service.h"
#include "sharding/key_codec.h"
#include "sharding/placement.h"
#include "sharding/routing_map.h"
#include "storage/engine.h"
#include "tests/server/sim_clock.h"
#include "tests/support/crashable_file_system.h"
#include "tests/support/kvd_process.h"
#include "tests/support/linearizability.h"

namespace kv::server::sim {
namespace {

using kv::testing::Operation;

constexpr int kTickMs = 10;
constexpr uint64_t kDataGroup = kDefaultDataGroupId;

class Simulation;

// One node's way out: into the simulated network.
class SimSink final : public MessageSink {
 public:
  SimSink(Simulation* sim, uint64_t id) : sim_(sim), id_(id) {}
  void Send(std::vector<raftpb::Message> messages) override;
  void SendSnapshot(raftpb::Message message, std::unique_ptr<SnapshotSource> source,
                    std::function<void(bool)> done) override;
  void Forward(uint64_t to, raftpb::ForwardRequest request, absl::Time deadline,
               ForwardDone done) override;

 private:
  Simulation* sim_;
  uint64_t id_;
};

struct SimNode {
  uint64_t id = 0;
  std::string dir;
  // The node's disk: a crash loses what was written and not synced.
  std::unique_ptr<kv::testing::CrashableFileSystem> disk =
      std::make_unique<kv::testing::CrashableFileSystem>();
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<SimSink> sink;
  std::unique_ptr<RaftDriver> driver;
  bool up = false;
  int boots = 0;  // an answer to a forward reaches only the boot that sent it
  // A crash armed for the middle of the next iteration that writes a batch.
  std::optional<DriverOptions::CrashPoint> crash_armed;
  bool crash_at_next_snapshot = false;  // at kBetweenWrites, whenever it comes
  int64_t down_since_ms = 0;            // when it last crashed
};

struct InFlight {
  int64_t deliver_at = 0;
  uint64_t seq = 0;
  uint64_t from = 0;
  uint64_t to = 0;
  std::vector<raftpb::Message> messages;
  // A snapshot: its data and the sender's completion.
  std::optional<std::string> snapshot_data;
  std::function<void(bool)> snapshot_done;
  // A forwarded write on its way to the leader, or the leader's answer on its way back (to the
  // boot `boot` of the forwarding node; for a snapshot, the boot of its sender).
  std::optional<raftpb::ForwardRequest> forward;
  std::optional<absl::StatusOr<raftpb::ForwardResponse>> answer;
  MessageSink::ForwardDone forward_done;
  absl::Time forward_deadline;
  int boot = 0;
};

// A client of the simulated store: its own exactly-once identity (a retried write carries the
// same request id, wherever it is sent) and a routing cache, as the client library keeps: a
// shard's span as some node described it, corrected only when a replica refuses a key (a split
// moved it) or holds no replica (a redirect), so it goes stale across splits.
struct SimClient {
  uint64_t id = 0;
  uint64_t next_seq = 1;
  std::set<uint64_t> unfinished;                 // seqs a retry may still be sent for
  std::map<uint64_t, sharding::KeyRange> cache;  // group -> the span it was learned with
  uint64_t FirstIncomplete() const { return unfinished.empty() ? next_seq : *unfinished.begin(); }
};

// A keyspace of the simulation: its first group's id is its id.
struct Family {
  sharding::Keyspace ks;
  std::vector<sharding::KeyRange> initial;  // the spans it was created with
};

// A write of the history in flight: every attempt sends the same command (request id).
struct PendingPut {
  size_t at = 0;  // in the history
  uint64_t family = 0;
  std::string key;
  internal::Command cmd;
  SimClient* client = nullptr;
  int attempts = 0;
  uint64_t first_group = 0;    // where the first attempt went
  bool maybe_applied = false;  // an attempt ended with an unknown outcome
  bool done = false;
};

class Simulation {
 public:
  explicit Simulation(const NodeSimOptions& o) : o_(o), rng_(o.seed) {
    root_ = kv::testing::MakeTempDir("nodesim");
    for (int i = 1; i <= o.nodes; ++i) {
      auto n = std::make_unique<SimNode>();
      n->id = static_cast<uint64_t>(i);
      n->dir = absl::StrCat(root_, "/node", i);
      n->sink = std::make_unique<SimSink>(this, n->id);
      nodes_.push_back(std::move(n));
    }
    groups_.insert(kDataGroup);
    Family data;
    data.ks.id = sharding::kDefaultKeyspaceId;
    data.initial = {{sharding::KeyspaceBegin(data.ks.id), sharding::KeyspaceEnd(data.ks.id)}};
    families_[kDataGroup] = data;
    for (uint64_t c = 1; c <= 3; ++c)
      clients_.push_back(SimClient{c * 1000003 + o.seed, 1, {}, {}});
  }
  ~Simulation() {
    finished_ = true;  // callbacks of the reads that shutting down fails must not retry
    for (auto& n : nodes_) Crash(*n, /*count=*/false);
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  NodeSimResult Run() {
    if (Moving() && o_.drain) drained_ = 1 + Pick(nodes_.size());
    for (auto& n : nodes_) Boot(*n);
    for (int step = 0; step < o_.steps && result_.ok; ++step) Step(/*faults=*/true);
    // Heal: every node up, the network whole, no more faults; every group must elect and serve,
    // and every replica must converge.
    cut_.clear();
    for (auto& n : nodes_) {
      n->crash_armed.reset();
      n->crash_at_next_snapshot = false;
      if (!n->up) Boot(*n);
    }
    for (int step = 0; step < 4000 && result_.ok; ++step) Step(/*faults=*/false);
    // The drain finishes once nothing gets in its way.
    for (int step = 0; step < 20000 && result_.ok && drained_ != 0 && !Drained(); ++step) {
      Step(false);
    }
    if (result_.ok && drained_ != 0 && !Drained()) {
      std::string left;
      for (uint64_t g : groups_) {
        if (g != kDataGroup && MembersOf(g).contains(drained_)) absl::StrAppend(&left, " ", g);
      }
      Fail(absl::StrCat("node ", drained_, " was drained and still holds groups", left,
                        DescribeGroup(std::stoull(left.substr(1)))));
    }
    if (result_.ok) FinalReads();
    for (int step = 0; step < 3000 && result_.ok && final_pending_ > 0; ++step) Step(false);
    if (result_.ok && final_pending_ > 0) {
      std::string groups;
      for (uint64_t g : groups_) {
        absl::StrAppend(&groups, "\n  group ", g, ":");
        for (auto& n : nodes_) {
          GroupStatus st = n->driver->Status(g);
          absl::StrAppend(&groups, " [node ", n->id, " ", raft::RoleName(st.role), " term ",
                          st.term, " leader ", st.leader_id, " commit ", st.commit, " last ",
                          st.last_index, st.quiesced ? " quiet" : "", " first ", st.first_index,
                          "]");
          for (const auto& p : st.peers) {
            absl::StrAppend(&groups, " {", p.id, " ", p.state, " m", p.match, " n", p.next, "}");
          }
        }
      }
      Fail(absl::StrCat(final_pending_, " final reads never answered: a group did not recover",
                        groups));
    }
    // Followers learn the last commit index with the next heartbeat: give them a moment.
    for (int step = 0; step < 3000 && result_.ok && !AllApplied(); ++step) Step(false);
    if (result_.ok) CheckConvergence();
    if (result_.ok) CheckSpans(/*complete=*/true);
    if (result_.ok && Moving()) CheckGroupsCover();
    if (result_.ok) CheckVersionsGrow();
    if (result_.ok) {
      std::vector<Operation> done;
      for (size_t i = 0; i < history_.size(); ++i) {
        if (!failed_.contains(i)) done.push_back(history_[i]);
      }
      auto check = kv::testing::CheckLinearizable(done);
      if (!check.ok) Fail("linearizability: " + check.explanation);
    }
    result_.client_ops = static_cast<int>(history_.size());
    for (auto& n : nodes_) {
      if (n->engine) CountLogSegments(*n);
    }
    return result_;
  }

  void CountLogSegments(SimNode& n) {
    result_.log_segments_deleted += static_cast<int>(n.engine->raft_log().stats().segments_deleted);
  }

  // Network.
  void Enqueue(uint64_t from, std::vector<raftpb::Message> messages) {
    std::map<uint64_t, std::vector<raftpb::Message>> by_node;
    for (auto& m : messages) {
      if (Uniform() < o_.drop) continue;
      by_node[m.to()].push_back(std::move(m));
    }
    for (auto& [to, batch] : by_node) {
      InFlight f;
      f.from = from;
      f.to = to;
      f.messages = std::move(batch);
      Schedule(std::move(f), 1 + Pick(8));
    }
  }
  // Puts `f` on the simulated network, delivered `delay_ms` from now (ties in sending order).
  void Schedule(InFlight f, uint64_t delay_ms) {
    f.deliver_at = NowMs() + static_cast<int64_t>(delay_ms);
    f.seq = seq_++;
    network_.emplace(std::make_pair(f.deliver_at, f.seq), std::move(f));
  }
  void EnqueueForward(uint64_t from, uint64_t to, raftpb::ForwardRequest request,
                      absl::Time deadline, MessageSink::ForwardDone done) {
    if (Uniform() < o_.drop) return;  // lost: the writer never hears back (outcome unknown)
    InFlight f;
    f.from = from;
    f.to = to;
    f.forward = std::move(request);
    f.forward_deadline = deadline;
    f.forward_done = std::move(done);
    f.boot = Node(from).boots;
    Schedule(std::move(f), 1 + Pick(8));
  }
  void EnqueueSnapshot(uint64_t from, raftpb::Message m, std::string data,
                       std::function<void(bool)> done) {
    InFlight f;
    f.from = from;
    f.to = m.to();
    f.messages.push_back(std::move(m));
    f.snapshot_data = std::move(data);
    f.snapshot_done = std::move(done);
    f.boot = Node(from).boots;  // the completion belongs to the sender's driver of that boot
    Schedule(std::move(f), 5 + Pick(20));
  }

 private:
  int64_t NowMs() const { return absl::ToInt64Milliseconds(clock_.elapsed); }
  double Uniform() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  uint64_t Pick(uint64_t n) { return rng_() % n; }
  SimNode& Node(uint64_t id) { return *nodes_[id - 1]; }

  void Fail(const std::string& what) {
    if (!result_.ok) return;
    result_.ok = false;
    result_.failure = absl::StrCat(what, " (at t=", NowMs(), " ms)");
  }

  void Boot(SimNode& n) {
    storage::EngineOptions eo;
    eo.path = n.dir;
    eo.block_cache_bytes = 1 << 20;
    eo.env = n.disk->env();
    // Small, so that the Raft log rotates, deletes dead segments and asks idle groups to rewrite
    // their logs, all under the crashes.
    eo.raft_log_segment_bytes = 4 << 10;
    auto engine = storage::Engine::Open(eo);
    if (!engine.ok()) return Fail("engine: " + engine.status().ToString());
    n.engine = *std::move(engine);
    DriverOptions d;
    d.node_id = n.id;
    d.sync = true;  // as in kvd: what the driver does not sync, a crash takes away
    d.tick = absl::Milliseconds(kTickMs);
    d.election_tick = 10;
    d.quiesce_after_ticks = o_.quiesce ? 20 : 0;
    // Small, so that a follower back from a crash or a partition often needs a snapshot.
    d.compact_threshold = 16;
    d.compact_retain = 2;
    // Well inside the healing window: a delegate whose report was lost is replaced in time.
    d.delegated_snapshot_timeout = absl::Milliseconds(300);
    // Two zones (odd and even node ids): a replica in the receiver's zone streams its snapshot
    // when the leader is in the other.
    d.locality_of = [](uint64_t node) { return NodeLocality{"sim", node % 2 ? "odd" : "even"}; };
    d.clock = &clock_;
    d.seed = o_.seed * 7919 + n.id * 131 + static_cast<uint64_t>(boots_++);
    d.peer_address = absl::StrCat("sim-", n.id);
    SimNode* node = &n;
    d.crash_here = [node, this](DriverOptions::CrashPoint point) {
      if (point == DriverOptions::CrashPoint::kBetweenWrites && node->crash_at_next_snapshot) {
        node->crash_at_next_snapshot = false;
        ++result_.crashes_between_writes;
        return true;
      }
      if (node->crash_armed != point) return false;
      node->crash_armed.reset();
      return true;
    };
    d.client_address = d.peer_address;
    for (const auto& other : nodes_) d.initial_voters[other->id] = absl::StrCat("sim-", other->id);
    storage::Engine* engine_ptr = n.engine.get();
    n.driver = std::make_unique<RaftDriver>(
        engine_ptr, d, [engine_ptr](const internal::GroupDescriptor& g) {
          // As kvd's node does: the metadata group owns the system keyspace, every other group
          // the shard its descriptor names.
          return std::make_unique<KvStateMachine>(engine_ptr, g.group_id(),
                                                  g.group_id() == kMetadataGroupId
                                                      ? ShardScope::WholeKeyspace(kSystemShardId)
                                                      : ShardScope::Of(g));
        });
    n.driver->SetTransport(n.sink.get());
    if (auto s = n.driver->Open({{kMetadataGroupId, kSystemShardId}, {kDataGroup, kDataGroup}});
        !s.ok()) {
      return Fail("open: " + s.ToString());
    }
    n.up = true;
    ++n.boots;
    // Groups created, or moved here or away, while this node was down (the metadata would tell
    // it on restart).
    for (const auto& [g, d] : current_) {
      if (groups_.contains(g) && !children_.contains(g)) n.driver->Reconcile(g, d);
    }  // children: DiscoverChildren
    for (uint64_t g : destroyed_) n.driver->DestroyGroup(g, nullptr);
  }

  void Crash(SimNode& n, bool count = true) {
    if (!n.up) return;
    Trace(absl::StrCat("node ", n.id, " crashes"));
    n.down_since_ms = NowMs();
    n.up = false;
    n.crash_armed.reset();
    if (count) ++result_.crashes;
    n.disk->Crash();   // nothing written from here on survives
    n.driver.reset();  // in-flight writes and reads end with unknown outcome
    CountLogSegments(n);
    n.engine.reset();
    n.disk->Restart();  // unsynced file data is gone
    if (n.disk->last_lost_bytes() > 0) ++result_.crashes_that_lost_writes;
  }

  // Creates a keyspace of a random strategy: a range keyspace of one shard, a hash keyspace of
  // two slot spans, or a geo keyspace of two regions (a shard each), on every node up.
  void CreateFamily() {
    Family f;
    f.ks.id = next_group_;
    f.ks.strategy = static_cast<sharding::Strategy>(Pick(3));
    if (f.ks.strategy == sharding::Strategy::kGeo) f.ks.regions = {"eu", "us"};
    auto spans = sharding::InitialSpans(f.ks, 2, {});
    if (!spans.ok()) return Fail("initial spans: " + spans.status().ToString());
    f.initial = *spans;
    for (const auto& span : f.initial) {
      uint64_t g = next_group_++;
      internal::GroupDescriptor d;
      d.set_format(1);
      d.set_group_id(g);
      d.set_shard_id(g);
      for (uint64_t v : PickVoters()) d.add_voters(v);
      d.mutable_epoch()->set_generation(1);
      d.mutable_epoch()->set_conf_version(1);
      d.set_keyspace_id(f.ks.id);
      d.set_strategy(static_cast<uint32_t>(f.ks.strategy));
      for (const auto& r : f.ks.regions) d.add_regions(r);
      d.set_span_start(span.start);
      d.set_span_end(span.end);
      if (g != f.ks.id) keyspace_of_[g] = f.ks.id;
      current_[g] = d;
      groups_.insert(g);
      ++result_.groups_created;
      for (uint64_t v : d.voters()) {
        if (Node(v).up) Node(v).driver->CreateGroup(d, ReplicaOrigin{}, nullptr);
      }
    }
    families_[f.ks.id] = std::move(f);
  }

  // The leader's side of a forwarded write, as RaftService::Forward serves it; the answer travels
  // back over the network (and may be lost).
  void Serve(InFlight f) {
    SimNode& leader = Node(f.to);
    ++result_.forwards_served;
    uint64_t from = f.from;
    int boot = f.boot;
    ServeForwardedWrite(leader.driver.get(), *f.forward, from,
                        ForwardRules{kMetadataGroupId, RequestLimits{}}, f.forward_deadline,
                        [this, from, leader_id = leader.id, boot, done = std::move(f.forward_done)](
                            absl::StatusOr<raftpb::ForwardResponse> answer) mutable {
                          if (finished_ || Uniform() < o_.drop) return;
                          InFlight back;
                          back.from = leader_id;
                          back.to = from;
                          back.answer = std::move(answer);
                          back.forward_done = std::move(done);
                          back.boot = boot;
                          Schedule(std::move(back), 1 + Pick(8));
                        });
  }

  void Step(bool faults) {
    clock_.elapsed += absl::Milliseconds(1);
    while (!network_.empty() && network_.begin()->first.first <= NowMs()) {
      InFlight f = std::move(network_.begin()->second);
      network_.erase(network_.begin());
      SimNode& to = Node(f.to);
      bool reachable = to.up && !cut_.contains(f.from) && !cut_.contains(f.to);
      if (f.forward) {
        if (reachable) Serve(std::move(f));
        continue;
      }
      if (f.answer) {
        // Back at the node that forwarded it, unless that node crashed since.
        if (reachable && to.boots == f.boot) f.forward_done(std::move(*f.answer));
        continue;
      }
      if (f.snapshot_data) {
        if (reachable) {
          // Received as kvd's peer service does: checked and written to files by a sink.
          uint64_t group = f.messages[0].group_id();
          auto received = to.driver->OpenSnapshotSink(group, f.from);
          absl::Status s =
              received.ok() ? (*received)->Append(*f.snapshot_data) : received.status();
          if (s.ok()) {
            auto complete = (*received)->Finish();
            if (complete.ok()) {
              ++result_.snapshots_received;
              if (f.messages[0].from() != f.from) ++result_.delegated_snapshots_received;
              to.driver->DeliverSnapshot(f.from, true, std::move(f.messages[0]),
                                         *std::move(complete));
            } else {
              s = complete.status();
            }
          }
          if (!s.ok()) return Fail("snapshot refused: " + s.ToString());
        }
        SimNode& from = Node(f.from);
        if (from.up && from.boots == f.boot) f.snapshot_done(reachable);
        continue;
      }
      if (reachable) to.driver->Deliver(f.from, true, "", std::move(f.messages));
    }
    if (faults) Faults();
    RunTimers();
    if (NowMs() % 10 == 0) DiscoverChildren();
    if (Moving() && NowMs() % 10 == 5) FollowDescriptors();
    if (faults && Moving() && Uniform() < o_.move) MoveStep();
    if (faults && !Moving() && Uniform() < o_.merge) Merge();
    if (o_.merge > 0 && NowMs() % 10 == 7) DiscoverMerged();
    if (o_.merge > 0 && NowMs() % 100 == 3) SettleFrozen();
    if ((drained_ != 0 || (Moving() && o_.dead_after_ms > 0)) &&
        Uniform() < (faults ? o_.move : 0.05)) {
      PlacementStep();
    }
    if (NowMs() % 50 == 0) CheckSpans(/*complete=*/false);
    if (Uniform() < (faults ? 0.3 : 0.05)) ClientOp();
    bool tick = NowMs() % kTickMs == 0;
    for (auto& n : nodes_) {
      if (!n->up) continue;
      n->driver->RunOnce(tick ? 1 : 0);
      if (n->driver->crashed()) {
        ++result_.mid_batch_crashes;
        Crash(*n);
      }
    }
    if (NowMs() % 500 == 0) SampleQuiet();
  }

  void Faults() {
    double r = Uniform();
    if (r < o_.crash) {
      SimNode& n = Node(1 + Pick(nodes_.size()));
      double how = Uniform();
      if (!n.up) {
        Boot(n);
      } else if (how < 0.4) {
        Crash(n);  // between iterations
      } else {
        // In the middle of the next batch: before it is written (it is lost), or after it is
        // durable but before anything was sent, applied or answered. Some nodes also crash in
        // the next batch that installs a snapshot, whenever it comes: after its data and meta
        // reached RocksDB, before the log dropped the entries it replaces.
        n.crash_armed = how < 0.7 ? DriverOptions::CrashPoint::kBeforeWrite
                                  : DriverOptions::CrashPoint::kAfterWrite;
        if (how > 0.9) n.crash_at_next_snapshot = true;
      }
    } else if (r < o_.crash + o_.partition) {
      if (!cut_.empty() && Uniform() < 0.5) {
        cut_.clear();
      } else {
        cut_.insert(1 + Pick(nodes_.size()));
      }
    } else if (r < o_.crash + o_.partition + o_.split) {
      Split();
    } else if (r < o_.crash + o_.partition + o_.split + o_.group_churn) {
      size_t families = 0;
      for (uint64_t g : groups_) families += KeyspaceOf(g) == g;
      if (families < 4 || Uniform() < 0.5) {
        CreateFamily();
      } else {
        // Destroy a created group with its split children (a keyspace); its keys leave the
        // checked history.
        std::vector<uint64_t> extra;
        for (uint64_t g : groups_) {
          if (g != kDataGroup && KeyspaceOf(g) == g) extra.push_back(g);
        }
        uint64_t family = extra[Pick(extra.size())];
        std::vector<uint64_t> members;
        for (uint64_t g : groups_) {
          if (KeyspaceOf(g) == family) members.push_back(g);
        }
        families_.erase(family);
        for (uint64_t g : members) {
          Trace(absl::StrCat("group ", g, " destroyed with keyspace ", family));
          groups_.erase(g);
          destroyed_.insert(g);
          ++result_.groups_destroyed;
          for (auto& n : nodes_) {
            if (n->up) n->driver->DestroyGroup(g, nullptr);
          }
        }
      }
    }
    for (auto& n : nodes_) {
      if (!n->up && Uniform() < 0.004) Boot(*n);
    }
  }

  // Keys: `g<family>/k<n>`; a geo keyspace's start with their region (eu or us).
  std::string KeyOf(uint64_t family, uint64_t k) {
    std::string key = absl::StrCat("g", family, "/k", k);
    const Family& f = families_.at(family);
    if (f.ks.strategy == sharding::Strategy::kGeo)
      key = absl::StrCat(f.ks.regions[k % 2], "/", key);
    family_of_key_[key] = family;
    return key;
  }
  // The keyspace a group's keys belong to: its own id, or for a split child its parent's.
  uint64_t KeyspaceOf(uint64_t group) {
    auto it = keyspace_of_.find(group);
    return it == keyspace_of_.end() ? group : it->second;
  }
  // The group of `family` whose replica on `n` owns `key` (the family's first group if none).
  uint64_t GroupFor(SimNode& n, uint64_t family, const std::string& key) {
    if (!n.up) return family;
    for (uint64_t g : groups_) {
      if (KeyspaceOf(g) != family) continue;
      KvStateMachine* sm = n.driver->StateMachineOf(g);
      if (sm && sm->scope().span.Contains(sharding::EncodeKey(sm->scope().keyspace, key))) return g;
    }
    return family;
  }

  // The client's route for `key`: its cache's shard, else what node `n` holds (then cached).
  uint64_t Route(SimClient& c, SimNode& n, uint64_t family, const std::string& key) {
    std::string encoded = sharding::EncodeKey(families_.at(family).ks, key);
    for (const auto& [g, span] : c.cache) {
      if (span.Contains(encoded) && KeyspaceOf(g) == family) return g;
    }
    return Learn(c, n, family, key);
  }
  // Corrects the client's cache for `key` from node `n`'s replicas (a redirect, or a refusal).
  uint64_t Learn(SimClient& c, SimNode& n, uint64_t family, const std::string& key) {
    uint64_t g = GroupFor(n, family, key);
    KvStateMachine* sm = n.up ? n.driver->StateMachineOf(g) : nullptr;
    if (!sm) return g;
    const sharding::KeyRange& span = sm->scope().span;
    for (auto it = c.cache.begin(); it != c.cache.end();) {
      bool overlaps = it->second.start < span.end && span.start < it->second.end;
      it = overlaps || it->first == g ? c.cache.erase(it) : std::next(it);
    }
    c.cache[g] = span;
    return g;
  }

  void Trace(const std::string& what) {
    static const bool on = std::getenv("KV_NODE_SIM_TRACE") != nullptr;
    if (on) std::fprintf(stderr, "t=%ld %s\n", static_cast<long>(NowMs()), what.c_str());
  }
  bool Moving() const { return o_.replicas > 0 && o_.replicas < o_.nodes; }
  // The first voters of a created group: every node, or `replicas` of them at random.
  std::vector<uint64_t> PickVoters() {
    std::vector<uint64_t> ids;
    for (const auto& n : nodes_) ids.push_back(n->id);
    if (!Moving()) return ids;
    std::shuffle(ids.begin(), ids.end(), rng_);
    ids.resize(static_cast<size_t>(o_.replicas));
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  // The members of a created group as its newest descriptor names them.
  std::set<uint64_t> MembersOf(uint64_t g) {
    std::set<uint64_t> out;
    auto it = current_.find(g);
    if (it == current_.end()) {
      for (const auto& n : nodes_) out.insert(n->id);
      return out;
    }
    out.insert(it->second.voters().begin(), it->second.voters().end());
    out.insert(it->second.learners().begin(), it->second.learners().end());
    return out;
  }
  // As kvd's nodes follow the metadata: the newest descriptor any replica applied becomes the
  // group's, and every node hosts the group, or destroys its replica, by it (Reconcile).
  void FollowDescriptors() {
    for (uint64_t g : groups_) {
      auto cur = current_.find(g);
      if (cur == current_.end()) continue;
      bool changed = false;
      for (auto& n : nodes_) {
        if (!n->up) continue;
        auto d = n->driver->DescriptorOf(g);
        if (!d) continue;
        if (sharding::IsNewer(
                {d->epoch().generation(), d->epoch().conf_version()},
                {cur->second.epoch().generation(), cur->second.epoch().conf_version()})) {
          Trace(absl::StrCat("group ", g, ": followed from node ", n->id, ": ",
                             d->ShortDebugString()));
          cur->second = *d;
          changed = true;
        }
      }
      if (!changed && NowMs() % 200 != 5) continue;
      std::set<uint64_t> members = MembersOf(g);
      for (auto& n : nodes_) {
        if (!n->up) continue;
        bool hosts = n->driver->StateMachineOf(g) != nullptr;
        if (hosts && !members.contains(n->id)) {
          ++result_.replicas_removed;
          if (n->id == drained_) ++result_.drained_replicas;
        }
        // Every node, as kvd's do: a replica behind the membership learns who may catch it up.
        n->driver->Reconcile(g, cur->second);
      }
    }
  }
  // One step of a move of a random created group, on its leader: a learner on a node outside
  // the group; once there is one, the joint change that makes it a voter in place of a voter
  // other than the leader (refused until the learner caught up). A joint configuration is left
  // by the leader on its own.
  void MoveStep() {
    std::vector<uint64_t> movable;
    for (uint64_t g : groups_) {
      if (g != kDataGroup) movable.push_back(g);
    }
    if (movable.empty()) return;
    uint64_t g = movable[Pick(movable.size())];
    SimNode* leader = nullptr;
    for (auto& n : nodes_) {
      if (n->up && n->driver->IsLeader(g)) leader = n.get();
    }
    if (!leader) return;
    raftpb::ConfState conf = leader->driver->Status(g).conf;
    if (conf.voters_outgoing_size() > 0 || conf.voters_size() == 0) return;
    raftpb::ConfChange cc;
    if (conf.learners_size() == 0) {
      std::vector<uint64_t> outside;
      for (const auto& n : nodes_) {
        if (!raft::IsMemberOf(conf, n->id) && n->id != drained_) outside.push_back(n->id);
      }
      if (outside.empty()) return;
      uint64_t to = outside[Pick(outside.size())];
      cc.set_type(raftpb::CONF_ADD_LEARNER);
      cc.set_node_id(to);
      cc.set_address(absl::StrCat("sim-", to));
    } else {
      std::vector<uint64_t> replaceable;
      for (const auto& m : conf.voters()) {
        if (m.id() != leader->id) replaceable.push_back(m.id());
      }
      if (replaceable.empty()) return;
      cc = JointReplacing(conf, replaceable[Pick(replaceable.size())], conf.learners(0).id());
    }
    ProposeMoveStep(*leader, g, cc, "random move", /*replaces_dead=*/false);
  }
  // The joint change that makes `in` a voter in place of `out`.
  static raftpb::ConfChange JointReplacing(const raftpb::ConfState& conf, uint64_t out,
                                           uint64_t in) {
    raftpb::ConfChange cc;
    cc.set_type(raftpb::CONF_ENTER_JOINT);
    for (const auto& m : conf.voters()) {
      if (m.id() != out) cc.add_voters()->set_id(m.id());
    }
    cc.add_voters()->set_id(in);
    return cc;
  }
  // Proposes one step of a move on the group's leader, counting what the leader accepted.
  void ProposeMoveStep(SimNode& leader, uint64_t g, const raftpb::ConfChange& cc,
                       const std::string& why, bool replaces_dead) {
    bool joint = cc.type() == raftpb::CONF_ENTER_JOINT;
    Trace(absl::StrCat("group ", g, ": ", why, " on node ", leader.id, " proposes ",
                       cc.ShortDebugString()));
    leader.driver->ChangeMembership(g, cc,
                                    [this, joint, replaces_dead](absl::StatusOr<uint64_t> index) {
                                      if (finished_ || !index.ok()) return;
                                      ++(joint ? result_.joint_changes : result_.learners_added);
                                      if (joint && replaces_dead) ++result_.dead_node_moves;
                                    });
  }

  bool Drained() {
    for (uint64_t g : groups_) {
      if (g != kDataGroup && MembersOf(g).contains(drained_)) return false;
    }
    return true;
  }
  // One step of placement, as kvd's rebalancer takes it: one of the planned moves off the
  // drained node or a dead one, on the group's leader (which hands leadership away first if it
  // is the one to go).
  void PlacementStep() {
    std::vector<sharding::PlacementNode> nodes;
    for (const auto& n : nodes_) {
      sharding::PlacementNode p;
      p.id = n->id;
      p.draining = n->id == drained_;
      p.up = n->up || o_.dead_after_ms == 0 || NowMs() - n->down_since_ms < o_.dead_after_ms;
      nodes.push_back(p);
    }
    std::vector<sharding::PlacedShard> shards;
    for (uint64_t g : groups_) {
      if (g == kDataGroup || !current_.contains(g)) continue;
      sharding::PlacedShard s;
      s.id = g;
      s.replicas.assign(current_[g].voters().begin(), current_[g].voters().end());
      shards.push_back(std::move(s));
    }
    sharding::PlacementOptions options;
    options.balance = false;
    options.max_moves = 1000;
    sharding::PlacementPlan plan = sharding::PlanMoves(nodes, shards, options);
    if (plan.moves.empty()) return;
    const sharding::ReplicaMove& m = plan.moves[Pick(plan.moves.size())];
    SimNode* leader = nullptr;
    for (auto& n : nodes_) {
      if (n->up && n->driver->IsLeader(m.shard_id)) leader = n.get();
    }
    if (!leader) return;
    raftpb::ConfState conf = leader->driver->Status(m.shard_id).conf;
    if (conf.voters_outgoing_size() > 0 || !raft::IsVoterIn(conf, m.from)) return;
    if (leader->id == m.from) {
      for (const auto& v : conf.voters()) {
        if (v.id() != m.from) return leader->driver->TransferLeadership(m.shard_id, v.id());
      }
      return;
    }
    raftpb::ConfChange cc;
    if (!raft::IsMemberOf(conf, m.to)) {
      if (conf.learners_size() > 0) return;  // a random move's learner is on its way
      cc.set_type(raftpb::CONF_ADD_LEARNER);
      cc.set_node_id(m.to);
      cc.set_address(absl::StrCat("sim-", m.to));
    } else if (!raft::IsVoterIn(conf, m.to)) {
      cc = JointReplacing(conf, m.from, m.to);
    } else {
      return;
    }
    ProposeMoveStep(*leader, m.shard_id, cc, "placement (" + m.reason + ")",
                    m.reason == "dead node");
  }

  // Splits a created group at one of its family's keys (a hash keyspace's at a slot boundary),
  // through a replica on a random node (forwarded to the leader), with that replica's view of
  // the generation (maybe stale: then the split is refused as it applies).
  void Split() {
    SimNode& n = Node(1 + Pick(nodes_.size()));
    if (!n.up) return;
    std::vector<uint64_t> splittable;
    for (uint64_t g : groups_) {
      if (g != kDataGroup && n.driver->StateMachineOf(g)) splittable.push_back(g);
    }
    if (splittable.empty()) return;
    uint64_t g = splittable[Pick(splittable.size())];
    KvStateMachine* sm = n.driver->StateMachineOf(g);
    const sharding::Keyspace& ks = sm->scope().keyspace;
    std::string at = ks.strategy == sharding::Strategy::kHash
                         ? sharding::SlotBoundary(ks.id, static_cast<uint32_t>(1 + Pick(65535)))
                         : sharding::EncodeKey(ks, KeyOf(KeyspaceOf(g), 1 + Pick(3)));
    if (!(at > sm->scope().span.start && at < sm->scope().span.end)) return;
    uint64_t child = next_group_++;
    keyspace_of_[child] = KeyspaceOf(g);
    pending_children_.insert(child);
    internal::Command cmd;
    cmd.mutable_split()->set_child_group_id(child);
    cmd.mutable_split()->set_split_key(at);
    cmd.mutable_split()->set_generation(sm->generation());
    RaftReplica replica(n.driver.get(), n.sink.get(), sm, g);
    replica.ProposeWrite(std::move(cmd), v1::WRITE_MAJORITY, clock_.Now() + absl::Milliseconds(800),
                         [](absl::StatusOr<WriteOutcome>) {});
  }

  // Merges, as ShardMerger runs them (server/shard_merger.h), from node `n`'s view: two adjacent
  // range shards it hosts; the survivor is the one further along. Steps are chained through
  // the answers; a crash or a lost answer leaves a freeze behind for SettleFrozen.
  void Merge() {
    SimNode& n = Node(1 + Pick(nodes_.size()));
    if (!n.up || NowMs() < merging_until_) return;
    std::vector<std::pair<uint64_t, uint64_t>> pairs;
    for (uint64_t l : groups_) {
      KvStateMachine* a = l == kDataGroup ? nullptr : n.driver->StateMachineOf(l);
      if (!a || !a->Mergeable() || a->frozen_at() != 0) continue;
      for (uint64_t r : groups_) {
        KvStateMachine* b = r == l ? nullptr : n.driver->StateMachineOf(r);
        if (b && b->frozen_at() == 0 && b->scope().keyspace.id == a->scope().keyspace.id &&
            b->scope().span.start == a->scope().span.end) {
          pairs.push_back({l, r});
        }
      }
    }
    if (pairs.empty()) return;
    auto [l, r] = pairs[Pick(pairs.size())];
    bool left_survives = n.driver->StateMachineOf(l)->applied_index() >=
                         n.driver->StateMachineOf(r)->applied_index();
    uint64_t survivor = left_survives ? l : r, absorbed = left_survives ? r : l;
    KvStateMachine* a = n.driver->StateMachineOf(absorbed);
    internal::Command freeze;
    freeze.mutable_freeze()->set_into_group_id(survivor);
    freeze.mutable_freeze()->set_generation(a->generation());
    for (auto& m : nodes_) freeze.mutable_freeze()->add_voters(m->id);
    internal::Command merge;
    auto* op = merge.mutable_merge();
    op->set_absorbed_group_id(absorbed);
    op->set_absorbed_generation(a->generation());
    op->set_absorbed_span_start(a->scope().span.start);
    op->set_absorbed_span_end(a->scope().span.end);
    op->set_generation(n.driver->StateMachineOf(survivor)->generation());
    for (auto& m : nodes_) op->add_voters(m->id);
    merging_until_ = NowMs() + 3000;
    uint64_t node = n.id;
    Trace(absl::StrCat("merge ", absorbed, " into ", survivor, " from node ", node));
    RaftReplica replica(n.driver.get(), n.sink.get(), nullptr, absorbed);
    replica.ProposeWrite(freeze, v1::WRITE_ALL, clock_.Now() + absl::Milliseconds(800),
                         [this, node, survivor, merge](absl::StatusOr<WriteOutcome> r) mutable {
                           if (finished_ || !r.ok() || !r->result.succeeded()) {
                             merging_until_ = 0;
                             return;
                           }
                           ++result_.merges_started;
                           merge.mutable_merge()->set_absorbed_freeze_index(r->index);
                           PadThenMerge(node, survivor, std::move(merge), 0);
                         });
  }
  // Pads the survivor's log past the freeze (a thaw of no freeze changes nothing), then merges;
  // a refusal or an unknown outcome is settled.
  void PadThenMerge(uint64_t node, uint64_t survivor, internal::Command merge, int pads) {
    SimNode& n = Node(node);
    uint64_t absorbed = merge.merge().absorbed_group_id();
    uint64_t freeze_index = merge.merge().absorbed_freeze_index();
    if (!n.up || finished_) return;
    KvStateMachine* s = n.driver->StateMachineOf(survivor);
    if (!s) return;
    RaftReplica replica(n.driver.get(), n.sink.get(), nullptr, survivor);
    bool behind = s->applied_index() < freeze_index && pads < 30;
    internal::Command pad;
    pad.mutable_thaw()->set_freeze_index(0);
    replica.ProposeWrite(behind ? pad : merge, v1::WRITE_MAJORITY,
                         clock_.Now() + absl::Milliseconds(800),
                         [this, node, survivor, merge, pads, behind, absorbed,
                          freeze_index](absl::StatusOr<WriteOutcome> r) {
                           if (finished_) return;
                           if (behind && r.ok())
                             return PadThenMerge(node, survivor, merge, pads + 1);
                           if (!behind && r.ok() && r->result.succeeded()) {
                             merging_until_ = 0;
                             return;
                           }
                           SettleMerge(node, absorbed, survivor, freeze_index);
                         });
  }
  // The abort in the survivor's log, then the thaw (ShardMerger::Settle).
  void SettleMerge(uint64_t node, uint64_t absorbed, uint64_t survivor, uint64_t freeze_index) {
    SimNode& n = Node(node);
    if (!n.up || finished_) return;
    merging_until_ = 0;
    if (!groups_.contains(survivor) && !n.driver->StateMachineOf(survivor)) {
      // The survivor merged away (or was dropped) after this freeze, without this merge: its
      // log can no longer take it (ShardMerger::Settle).
      return Thaw(node, absorbed, freeze_index);
    }
    internal::Command abort;
    abort.mutable_abort_merge()->set_absorbed_group_id(absorbed);
    abort.mutable_abort_merge()->set_absorbed_freeze_index(freeze_index);
    RaftReplica replica(n.driver.get(), n.sink.get(), nullptr, survivor);
    replica.ProposeWrite(abort, v1::WRITE_MAJORITY, clock_.Now() + absl::Milliseconds(800),
                         [this, node, absorbed, freeze_index](absl::StatusOr<WriteOutcome> r) {
                           if (finished_ || !r.ok() || !r->result.succeeded()) {
                             return;  // merged, or tried again later
                           }
                           Thaw(node, absorbed, freeze_index);
                         });
  }
  void Thaw(uint64_t node, uint64_t absorbed, uint64_t freeze_index) {
    SimNode& m = Node(node);
    if (!m.up || finished_) return;
    internal::Command thaw;
    thaw.mutable_thaw()->set_freeze_index(freeze_index);
    RaftReplica replica(m.driver.get(), m.sink.get(), nullptr, absorbed);
    replica.ProposeWrite(thaw, v1::WRITE_MAJORITY, clock_.Now() + absl::Milliseconds(800),
                         [this](absl::StatusOr<WriteOutcome> t) {
                           if (t.ok() && t->result.succeeded()) ++result_.merges_settled;
                         });
  }
  // A freeze that lasted 500 ms with no merge under way is settled from a node hosting both.
  void SettleFrozen() {
    std::map<std::pair<uint64_t, uint64_t>, int64_t> seen;
    for (uint64_t g : groups_) {
      for (auto& n : nodes_) {
        KvStateMachine* sm = n->up ? n->driver->StateMachineOf(g) : nullptr;
        if (!sm || sm->frozen_at() == 0) continue;
        auto key = std::make_pair(g, sm->frozen_at());
        auto it = frozen_seen_.find(key);
        int64_t first = it == frozen_seen_.end() ? NowMs() : it->second;
        seen[key] = first;
        if (NowMs() - first >= 500 && NowMs() >= merging_until_) {
          seen[key] = NowMs();  // once per 500 ms
          SettleMerge(n->id, g, sm->frozen_into(), sm->frozen_at());
        }
        break;
      }
    }
    frozen_seen_ = std::move(seen);
  }
  // A group a merge absorbed leaves the live set once any replica of a survivor settled it.
  void DiscoverMerged() {
    std::set<uint64_t> absorbed;
    for (auto& n : nodes_) {
      if (!n->up) continue;
      for (uint64_t g : groups_) {
        KvStateMachine* sm = n->driver->StateMachineOf(g);
        if (!sm) continue;
        for (const auto& m : sm->settled()) {
          if (m.merged()) absorbed.insert(m.absorbed_group_id());
        }
      }
    }
    for (uint64_t g : absorbed) {
      if (!groups_.erase(g)) continue;
      merged_.insert(g);
      ++result_.merges;
      Trace(absl::StrCat("group ", g, " merged away"));
    }
  }

  // Children come into being where their parents apply the split; the simulation learns of a
  // child from the first node that has it, and then lets every node's driver decide, by its real
  // rule, whether to create it empty (its parent replica skipped the split by a snapshot).
  void DiscoverChildren() {
    for (auto it = pending_children_.begin(); it != pending_children_.end();) {
      std::optional<internal::GroupDescriptor> d;
      for (auto& n : nodes_) {
        if (n->up && !d) d = n->driver->DescriptorOf(*it);
      }
      if (!d) {
        ++it;
        continue;
      }
      if (destroyed_.contains(d->split_from()) || !groups_.contains(d->split_from())) {
        // Its family was destroyed meanwhile: it goes with it.
        destroyed_.insert(*it);
        for (auto& n : nodes_) {
          if (n->up) n->driver->DestroyGroup(*it, nullptr);
        }
      } else {
        children_[*it] = *d;
        current_[*it] = *d;
        Trace(absl::StrCat("group ", *it, " split from ", d->split_from()));
        groups_.insert(*it);
        ++result_.splits;
      }
      it = pending_children_.erase(it);
    }
    for (const auto& [child, d] : children_) {
      if (!groups_.contains(child)) continue;
      for (auto& n : nodes_) {
        if (n->up && !n->driver->StateMachineOf(child))
          n->driver->Reconcile(child, current_[child]);
      }
    }
  }

  void ClientOp() {
    SimNode& n = Node(1 + Pick(nodes_.size()));
    if (!n.up) return;
    std::vector<uint64_t> families;
    for (const auto& [id, f] : families_) families.push_back(id);
    uint64_t family = families[Pick(families.size())];
    std::string key = KeyOf(family, Pick(4));
    if (per_key_[key] >= 40) return;  // bounds the checker's work per key
    ++per_key_[key];
    SimClient& c = clients_[Pick(clients_.size())];
    if (Uniform() < 0.5) {
      Put(c, n, family, key);
    } else {
      Get(c, n.id, family, key, Uniform() < 0.5 ? v1::READ_LINEARIZABLE : v1::READ_LEASE, 0, 0);
    }
  }

  void Put(SimClient& c, SimNode& n, uint64_t family, const std::string& key) {
    Operation op;
    op.kind = Operation::Kind::kPut;
    op.key = key;
    op.value = absl::StrCat("v", next_value_++);
    op.invoke = static_cast<uint64_t>(NowMs());
    op.complete = Operation::kUnknown;
    history_.push_back(op);
    auto p = std::make_shared<PendingPut>();
    p->at = history_.size() - 1;
    p->family = family;
    p->key = key;
    p->client = &c;
    p->cmd.set_client_id(c.id);
    p->cmd.set_seq(c.next_seq++);
    p->cmd.mutable_put()->set_key(key);
    p->cmd.mutable_put()->set_value(*op.value);
    c.unfinished.insert(p->cmd.seq());
    SendPut(p, n);
  }
  // One attempt of a write, through the replica the KV service writes with (a follower
  // forwards to the leader). A refusal that says it was not applied, or an unknown outcome, is
  // retried with the same request id (at most 3 attempts), from the client's corrected route.
  void SendPut(std::shared_ptr<PendingPut> p, SimNode& n) {
    if (p->done) return;
    if (!n.up || p->attempts >= 3 || !families_.contains(p->family)) return EndPut(*p);
    int attempt = ++p->attempts;
    p->cmd.set_first_incomplete_seq(p->client->FirstIncomplete());
    // A retry often reaches a node that routes the key itself (kvd's services do): by the spans
    // of the replicas it holds, which may be newer than the client's cache.
    uint64_t group = attempt > 1 && Uniform() < 0.5 ? Learn(*p->client, n, p->family, p->key)
                                                    : Route(*p->client, n, p->family, p->key);
    KvStateMachine* sm = n.driver->StateMachineOf(group);
    if (!sm) {
      // No replica here: the service would redirect; the client learns and goes on at once.
      ++result_.redirects;
      p->client->cache.erase(group);
      Learn(*p->client, n, p->family, p->key);
      // Moves leave some nodes without a replica of the group: the client tries another.
      return SendPut(p, Moving() ? Node(1 + Pick(nodes_.size())) : n);
    }
    if (attempt == 1) p->first_group = group;
    RaftReplica replica(n.driver.get(), n.sink.get(), sm, group);
    uint64_t node = n.id;
    replica.ProposeWrite(
        p->cmd, v1::WRITE_MAJORITY, clock_.Now() + absl::Milliseconds(800),
        [this, p, attempt, node, group](absl::StatusOr<WriteOutcome> r) {
          if (finished_ || p->done) return;
          if (r.ok()) {
            history_[p->at].complete = static_cast<uint64_t>(NowMs());
            NoteVersion(p->key, p->cmd.put().value(), r->result.version());
            put_versions_[p->at] = r->result.version();
            ++result_.acknowledged_writes;
            if (attempt > 1) ++result_.retried_writes_acknowledged;
            if (attempt > 1 && group != p->first_group && p->maybe_applied) {
              ++result_.retries_answered_by_another_shard;
            }
            return EndPut(*p);
          }
          bool not_applied = absl::IsAborted(r.status()) || absl::IsNotFound(r.status()) ||
                             absl::IsResourceExhausted(r.status()) ||
                             absl::IsPermissionDenied(r.status()) ||
                             absl::IsOutOfRange(r.status()) ||
                             r.status().message().find("not the leader") != std::string_view::npos;
          if (!not_applied) p->maybe_applied = true;
          if (attempt != p->attempts) return;  // a later attempt is under way
          SimNode& from = Node(node);
          if (absl::IsOutOfRange(r.status())) {
            ++result_.stale_routes;  // a split moved the key: the client corrects its cache
            Learn(*p->client, from, p->family, p->key);
          }
          uint64_t next = Uniform() < 0.5 ? node : 1 + Pick(nodes_.size());
          After(5 + Pick(60), [this, p, next] { SendPut(p, Node(next)); });
        });
  }
  void EndPut(PendingPut& p) {
    if (p.done) return;
    p.done = true;
    p.client->unfinished.erase(p.cmd.seq());
    if (history_[p.at].complete == Operation::kUnknown && !p.maybe_applied) {
      failed_.insert(p.at);  // every attempt definitely not applied
    }
  }

  // A read of `key` through the client's route; a replica that gave the key away (a split)
  // refuses it, and the client corrects its cache and reads again (at most 3 attempts).
  void Get(SimClient& c, uint64_t node, uint64_t family, const std::string& key,
           v1::ReadConsistency level, int attempt, size_t at) {
    SimNode& n = Node(node);
    if (attempt == 0) {
      Operation op;
      op.kind = Operation::Kind::kGet;
      op.key = key;
      op.invoke = static_cast<uint64_t>(NowMs());
      history_.push_back(op);
      at = history_.size() - 1;
      failed_.insert(at);  // until answered
    }
    if (!n.up || attempt >= 3 || !families_.contains(family)) return;
    uint64_t group = Route(c, n, family, key);
    ReadRequirement req;
    req.consistency = level;
    req.deadline = clock_.Now() + absl::Milliseconds(800);
    RaftDriver* driver = n.driver.get();
    SimClient* client = &c;
    driver->Read(group, req, [=, this](absl::Status s) {
      if (!s.ok() || finished_) return;
      KvStateMachine* sm = driver->StateMachineOf(group);
      if (!sm) return;
      auto v = sm->Get(key);
      if (absl::IsOutOfRange(v.status())) {
        ++result_.stale_routes;
        Learn(*client, Node(node), family, key);
        return Get(*client, node, family, key, level, attempt + 1, at);
      }
      if (absl::IsUnavailable(v.status())) return;  // frozen for a merge: not answered
      if (!v.ok()) return Fail("get: " + v.status().ToString());
      if (*v) NoteVersion(key, (**v).value, (**v).version);
      history_[at].value = *v ? std::optional<std::string>((**v).value) : std::nullopt;
      history_[at].complete = static_cast<uint64_t>(NowMs());
      failed_.erase(at);
    });
  }

  // Every value is written by one operation: seen with two versions, it was applied twice (a
  // retry that was not deduplicated, e.g. by a child that lost its parent's exactly-once
  // records).
  void NoteVersion(const std::string& key, const std::string& value, uint64_t version) {
    auto& seen = versions_of_[{key, value}];
    seen.insert(version);
    if (seen.size() > 1) {
      Fail(absl::StrCat("value ", value, " of ", key, " applied twice: versions ", *seen.begin(),
                        " and ", *seen.rbegin()));
    }
  }
  // Versions per key only grow: a write acknowledged before another began has a lower version.
  void CheckVersionsGrow() {
    std::map<std::string, std::vector<size_t>> by_key;
    for (const auto& [at, version] : put_versions_) by_key[history_[at].key].push_back(at);
    for (const auto& [key, ats] : by_key) {
      for (size_t a : ats) {
        for (size_t b : ats) {
          if (history_[a].complete < history_[b].invoke && put_versions_[a] >= put_versions_[b]) {
            return Fail(absl::StrCat(key, ": a write acknowledged at version ", put_versions_[a],
                                     " before another began, which got version ",
                                     put_versions_[b]));
          }
        }
      }
    }
  }

  // Each node's replicas of a keyspace own disjoint spans, and their generations only grow;
  // with `complete`, they also cover every span the keyspace was created with.
  void CheckSpans(bool complete) {
    for (auto& n : nodes_) {
      if (!n->up) continue;
      for (const auto& [family, f] : families_) {
        std::vector<sharding::KeyRange> spans;
        for (uint64_t g : HostedOf(*n, family)) {
          KvStateMachine* sm = n->driver->StateMachineOf(g);
          spans.push_back(sm->scope().span);
          uint64_t& last = generation_seen_[{n->id, n->boots, g}];
          if (sm->generation() < last) {
            return Fail(absl::StrCat("group ", g, " on node ", n->id, ": generation went from ",
                                     last, " back to ", sm->generation()));
          }
          last = sm->generation();
        }
        std::sort(spans.begin(), spans.end(),
                  [](const auto& a, const auto& b) { return a.start < b.start; });
        for (size_t i = 1; i < spans.size(); ++i) {
          if (spans[i].start < spans[i - 1].end) {
            return Fail(absl::StrCat("node ", n->id, ": two replicas of keyspace ", family,
                                     " own overlapping spans"));
          }
        }
        if (!complete || Moving()) continue;
        for (const auto& whole : f.initial) {
          std::vector<sharding::KeyRange> inside;
          for (const auto& span : spans) {
            if (span.start < whole.end && whole.start < span.end) inside.push_back(span);
          }
          if (!sharding::PartitionsExactly(inside, whole.start, whole.end)) {
            return Fail(absl::StrCat("node ", n->id, ": the replicas of keyspace ", family,
                                     " do not cover a span it was created with"));
          }
        }
      }
    }
  }
  // With moves, groups live on some nodes only: the groups of each keyspace, each as its first
  // member holds it, cover every span the keyspace was created with, exactly.
  void CheckGroupsCover() {
    for (const auto& [family, f] : families_) {
      std::vector<sharding::KeyRange> spans;
      for (uint64_t g : groups_) {
        if (KeyspaceOf(g) != family) continue;
        std::set<uint64_t> members = MembersOf(g);
        KvStateMachine* sm =
            members.empty() ? nullptr : Node(*members.begin()).driver->StateMachineOf(g);
        if (!sm) return Fail(absl::StrCat("group ", g, " has no replica on its first member"));
        spans.push_back(sm->scope().span);
      }
      for (const auto& whole : f.initial) {
        std::vector<sharding::KeyRange> inside;
        for (const auto& span : spans) {
          if (span.start < whole.end && whole.start < span.end) inside.push_back(span);
        }
        if (!sharding::PartitionsExactly(inside, whole.start, whole.end)) {
          return Fail(absl::StrCat("the groups of keyspace ", family,
                                   " do not cover a span it was created with"));
        }
      }
    }
  }
  std::vector<uint64_t> HostedOf(SimNode& n, uint64_t family) {
    std::vector<uint64_t> out;
    auto consider = [&](uint64_t g) {
      if (KeyspaceOf(g) == family && n.driver->StateMachineOf(g)) out.push_back(g);
    };
    for (uint64_t g : groups_) consider(g);
    for (uint64_t g : pending_children_) consider(g);
    return out;
  }

  // Runs `task` `delay_ms` from now (a client's pause before a retry).
  void After(uint64_t delay_ms, std::function<void()> task) {
    timers_.emplace(std::make_pair(NowMs() + static_cast<int64_t>(delay_ms), seq_++),
                    std::move(task));
  }
  void RunTimers() {
    while (!timers_.empty() && timers_.begin()->first.first <= NowMs()) {
      auto task = std::move(timers_.begin()->second);
      timers_.erase(timers_.begin());
      task();
    }
  }

  // After healing: one linearizable read of every key that was ever written, retried until it
  // is answered (a lost acknowledged write shows up as a read linearizability rejects).
  void FinalReads() {
    std::set<std::pair<uint64_t, std::string>> keys;
    for (const auto& op : history_) {
      uint64_t family = family_of_key_.at(op.key);
      if (families_.contains(family)) keys.insert({family, op.key});
    }
    final_pending_ = 0;
    for (const auto& [group, key] : keys) FinalRead(group, key, 0);
  }
  void FinalRead(uint64_t family, const std::string& key, int attempt) {
    if (finished_) return;
    if (attempt > 40) return Fail("final read of " + key + " never succeeded");
    ++final_pending_;
    SimNode& n = Node(1 + Pick(nodes_.size()));  // every node is up in this phase
    uint64_t group = GroupFor(n, family, key);
    ReadRequirement req;
    req.consistency = v1::READ_LINEARIZABLE;
    req.deadline = clock_.Now() + absl::Milliseconds(300);
    Operation op;
    op.kind = Operation::Kind::kGet;
    op.key = key;
    op.invoke = static_cast<uint64_t>(NowMs());
    RaftDriver* driver = n.driver.get();
    if (std::getenv("KV_NODE_SIM_TRACE")) {
      std::fprintf(stderr, "t=%ld final read %s on node %lu: issued\n", (long)NowMs(), key.c_str(),
                   (unsigned long)n.id);
    }
    n.driver->Read(
        group, req, [this, driver, family, group, key, attempt, op](absl::Status s) mutable {
          --final_pending_;
          if (s.ok() && std::getenv("KV_NODE_SIM_TRACE")) {
            std::fprintf(stderr, "t=%ld final read %s on node %lu: answered\n", (long)NowMs(),
                         key.c_str(), (unsigned long)driver->node_id());
          }
          if (!s.ok()) {
            if (std::getenv("KV_NODE_SIM_TRACE")) {
              std::fprintf(stderr, "t=%ld final read %s on node %lu: %s\n", (long)NowMs(),
                           key.c_str(), (unsigned long)driver->node_id(), s.ToString().c_str());
            }
            return FinalRead(family, key, attempt + 1);
          }
          KvStateMachine* sm = driver->StateMachineOf(group);
          if (!sm) return FinalRead(family, key, attempt + 1);  // absorbed by a merge meanwhile
          auto v = sm->Get(key);
          if (absl::IsUnavailable(v.status())) {
            return After(50, [this, family, key, attempt] { FinalRead(family, key, attempt + 1); });
          }
          if (absl::IsOutOfRange(v.status())) return FinalRead(family, key, attempt + 1);
          if (!v.ok()) return Fail("get: " + v.status().ToString());
          if (*v) NoteVersion(key, (**v).value, (**v).version);
          op.value = *v ? std::optional<std::string>((**v).value) : std::nullopt;
          op.complete = static_cast<uint64_t>(NowMs());
          history_.push_back(op);
        });
  }

  bool AllApplied() {
    for (uint64_t g : groups_) {
      std::set<uint64_t> applied;
      std::set<uint64_t> members = MembersOf(g);
      for (auto& n : nodes_) {
        if (members.contains(n->id)) applied.insert(n->driver->Status(g).applied);
      }
      if (applied.size() != 1) return false;
    }
    return true;
  }

  void CheckConvergence() {
    for (uint64_t g : groups_) {
      std::optional<std::vector<ScanItem>> first;
      uint64_t first_node = 0;
      std::set<uint64_t> members = MembersOf(g);
      for (auto& n : nodes_) {
        KvStateMachine* sm = n->driver->StateMachineOf(g);
        if (!members.contains(n->id)) {
          // A move took this node's replica away: it must be gone, not left serving.
          if (sm)
            return Fail(
                absl::StrCat("node ", n->id, " still hosts group ", g, ", which moved off it"));
          continue;
        }
        if (!sm) {
          std::string why;
          if (auto c = children_.find(g); c != children_.end()) {
            absl::StrAppend(&why, "; a split child of group ", c->second.split_from(), " at index ",
                            c->second.split_index());
            for (auto& m : nodes_) {
              GroupStatus st = m->driver->Status(c->second.split_from());
              absl::StrAppend(&why, " [node ", m->id, " ", raft::RoleName(st.role), " term ",
                              st.term, " leader ", st.leader_id, " commit ", st.commit, " applied ",
                              st.applied, " first ", st.first_index, " last ", st.last_index,
                              st.quiesced ? " quiet" : "", "]");
            }
            for (uint64_t other : HostedOf(*n, KeyspaceOf(g))) {
              KvStateMachine* o = n->driver->StateMachineOf(other);
              bool overlaps = o->scope().span.start < c->second.span_end() &&
                              c->second.span_start() < o->scope().span.end;
              if (overlaps) {
                absl::StrAppend(&why, "; overlapped here by group ", other, " (generation ",
                                o->generation(), ", applied ", o->applied_index(), ")");
              }
            }
          }
          for (auto& m : nodes_) {
            if (auto d = m->driver->DescriptorOf(g)) {
              absl::StrAppend(&why, "; node ", m->id,
                              " has its descriptor: ", d->ShortDebugString());
            }
          }
          absl::StrAppend(&why, "; followed: ", current_[g].ShortDebugString());
          return Fail(absl::StrCat("node ", n->id, " lost its replica of group ", g, why));
        }
        std::vector<ScanItem> items;
        bool more = false;
        std::string last;
        absl::Status s = sm->scope().keyspace.strategy == sharding::Strategy::kHash
                             ? sm->ScanFrom(sm->scope().span.start, "", "", 100000, 1 << 30, false,
                                            &items, &more, &last)
                             : sm->Scan("", "", 100000, 1 << 30, false, &items, &more);
        if (!s.ok()) {
          return Fail("scan: " + s.ToString());
        }
        if (!first) {
          first = items;
          first_node = n->id;
          continue;
        }
        bool same = first->size() == items.size();
        for (size_t i = 0; same && i < items.size(); ++i) {
          same = (*first)[i].key == items[i].key && (*first)[i].value == items[i].value &&
                 (*first)[i].version == items[i].version;
        }
        if (!same) {
          GroupStatus a = Node(first_node).driver->Status(g), b = n->driver->Status(g);
          return Fail(absl::StrCat(
              "group ", g, ": node ", n->id, " and node ", first_node,
              " hold different data after healing (", items.size(), " vs ", first->size(),
              " keys; applied ", b.applied, " vs ", a.applied, "; commit ", b.commit, " vs ",
              a.commit, "; roles ", raft::RoleName(b.role), " vs ", raft::RoleName(a.role),
              "; quiet ", b.quiesced, " vs ", a.quiesced, ")", DescribeGroup(g)));
        }
      }
    }
    for (uint64_t g : destroyed_) {
      for (auto& n : nodes_) {
        if (n->driver->StateMachineOf(g)) {
          return Fail(absl::StrCat("node ", n->id, " still hosts destroyed group ", g));
        }
      }
    }
    for (uint64_t g : merged_) {
      for (auto& n : nodes_) {
        if (n->driver->StateMachineOf(g)) {
          return Fail(absl::StrCat("node ", n->id, " still hosts group ", g, ", merged away"));
        }
      }
    }
  }

  // Every node's descriptor of `g`, its Raft view, and the one followed (a failure's context).
  std::string DescribeGroup(uint64_t g) {
    std::string out;
    for (auto& m : nodes_) {
      GroupStatus st = m->driver->Status(g);
      absl::StrAppend(&out, "\n  node ", m->id, ": ", raft::RoleName(st.role), " term ", st.term,
                      " leader ", st.leader_id, " conf ", st.conf.ShortDebugString());
      if (auto d = m->driver->DescriptorOf(g)) {
        absl::StrAppend(&out, " voters ", d->voters_size(), " learners ", d->learners_size(),
                        " conf_version ", d->epoch().conf_version());
      }
      for (const auto& p : st.peers) {
        absl::StrAppend(&out, "\n    peer ", p.id, " ", p.state, " match ", p.match, " next ",
                        p.next, " applied ", p.applied, p.recent_active ? " active" : "");
      }
    }
    auto it = current_.find(g);
    if (it != current_.end())
      absl::StrAppend(&out, "\n  followed: ", it->second.ShortDebugString());
    return out;
  }

  void SampleQuiet() {
    for (auto& n : nodes_) {
      if (!n->up) continue;
      for (uint64_t g : groups_) result_.quiet_group_observations += n->driver->Status(g).quiesced;
    }
  }

  NodeSimOptions o_;
  std::mt19937_64 rng_;
  SimClock clock_;
  std::string root_;
  std::vector<std::unique_ptr<SimNode>> nodes_;
  std::map<std::pair<int64_t, uint64_t>, InFlight> network_;
  uint64_t seq_ = 0;
  int boots_ = 0;
  std::set<uint64_t> cut_;
  uint64_t drained_ = 0;       // the node being drained (0: none)
  std::set<uint64_t> groups_;  // live groups (the data group and created ones)
  std::set<uint64_t> destroyed_;
  std::set<uint64_t> merged_;  // groups a merge absorbed
  int64_t merging_until_ = 0;  // a merge run is under way until then
  std::map<std::pair<uint64_t, uint64_t>, int64_t> frozen_seen_;  // (group, freeze) -> first ms
  std::map<uint64_t, uint64_t> keyspace_of_;  // split child -> its family (keyspace) id
  std::set<uint64_t> pending_children_;       // splits proposed, child not seen yet
  std::map<uint64_t, internal::GroupDescriptor> children_;
  std::map<uint64_t, Family> families_;  // by keyspace id
  // Each created group's newest descriptor any replica applied (the metadata's view).
  std::map<uint64_t, internal::GroupDescriptor> current_;
  std::map<std::string, uint64_t> family_of_key_;
  std::vector<SimClient> clients_;
  std::map<std::pair<std::string, std::string>, std::set<uint64_t>> versions_of_;
  std::map<size_t, uint64_t> put_versions_;  // acknowledged writes: history index -> version
  std::map<std::tuple<uint64_t, int, uint64_t>, uint64_t> generation_seen_;  // (node, boot, group)
  std::map<std::pair<int64_t, uint64_t>, std::function<void()>> timers_;
  uint64_t next_group_ = 2;
  std::vector<Operation> history_;
  std::set<size_t> failed_;  // definitely failed writes and unanswered reads
  std::map<std::string, int> per_key_;
  uint64_t next_value_ = 1;
  int final_pending_ = 0;
  bool finished_ = false;
  NodeSimResult result_;
};

void SimSink::Send(std::vector<raftpb::Message> messages) {
  sim_->Enqueue(id_, std::move(messages));
}

void SimSink::Forward(uint64_t to, raftpb::ForwardRequest request, absl::Time deadline,
                      ForwardDone done) {
  sim_->EnqueueForward(id_, to, std::move(request), deadline, std::move(done));
}

void SimSink::SendSnapshot(raftpb::Message message, std::unique_ptr<SnapshotSource> source,
                           std::function<void(bool)> done) {
  auto data = source->ReadAll();
  if (!data.ok()) return done(false);
  sim_->EnqueueSnapshot(id_, std::move(message), *std::move(data), std::move(done));
}

}  // namespace

NodeSimResult RunNodeSimulation(const NodeSimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace kv::server::sim
