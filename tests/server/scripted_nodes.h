// Whole nodes, scripted and deterministic: RaftDrivers with real RocksDB directories, run one
// iteration at a time on a simulated clock, wired by a network the test controls (it can hold
// back any message it chooses). Used by tests that must construct one exact interleaving.
#pragma once

#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "server/raft_driver.h"
#include "server/shard_scope.h"
#include "tests/server/sim_clock.h"
#include "tests/support/kvd_process.h"

namespace kv::server::testing {

class ScriptedNodes {
 public:
  struct Sent {
    uint64_t from;
    raftpb::Message m;
    // A snapshot stream (with set_deliver_snapshots): its data, and the sender's report.
    std::shared_ptr<std::string> snapshot_data = nullptr;
    std::function<void(bool)> snapshot_done = nullptr;
  };
  // Returns true to hold a message back: it stays queued, in order, until the test stops
  // holding it (Run delivers it at the first millisecond the predicate lets it through).
  using Hold = std::function<bool(const Sent&)>;

  // `tune` adjusts each node's driver options before it opens.
  explicit ScriptedNodes(int nodes, const std::function<void(DriverOptions&)>& tune = nullptr) {
    root_ = kv::testing::MakeTempDir("scripted");
    std::map<uint64_t, std::string> voters;
    for (int i = 1; i <= nodes; ++i) voters[i] = "n" + std::to_string(i);
    for (const auto& [id, address] : voters) {
      auto engine = storage::Engine::Open(storage::EngineOptions{root_ + "/" + address});
      if (!engine.ok()) std::abort();
      engines_[id] = *std::move(engine);
      DriverOptions d;
      d.node_id = id;
      d.sync = false;
      d.tick = absl::Milliseconds(10);
      d.election_tick = 10;
      d.quiesce_after_ticks = 20;
      d.clock = &clock_;
      d.seed = id;
      d.peer_address = address;
      d.client_address = address;
      d.initial_voters = voters;
      if (tune) tune(d);
      storage::Engine* e = engines_[id].get();
      drivers_[id] = std::make_unique<RaftDriver>(e, d, [e](const internal::GroupDescriptor& g) {
        return std::make_unique<KvStateMachine>(e, g.group_id(), ShardScope::Of(g));
      });
      sinks_[id] = std::make_unique<Sink>(this, id);
      drivers_[id]->SetTransport(sinks_[id].get());
      if (!drivers_[id]->Open({{1, 1}}).ok()) std::abort();
    }
  }
  ~ScriptedNodes() {
    drivers_.clear();
    engines_.clear();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  // Runs `ms` simulated milliseconds: deliveries (unless held back), a tick every 10 ms, one
  // iteration per node per millisecond. Returns the Raft messages (not beats) delivered.
  int Run(int ms) {
    int raft_messages = 0;
    for (int i = 0; i < ms; ++i) {
      clock_.elapsed += absl::Milliseconds(1);
      std::deque<Sent> now, held;
      now.swap(queue_);
      for (auto& s : now) {
        if (hold_ && hold_(s)) {
          held.push_back(std::move(s));
          continue;
        }
        if (s.m.group_id() != kNodeLivenessGroup) ++raft_messages;
        if (s.snapshot_data) {
          DeliverSnapshot(std::move(s));
          continue;
        }
        drivers_[s.m.to()]->Deliver(s.from, true, "", {std::move(s.m)});
      }
      for (auto& s : queue_) held.push_back(std::move(s));
      queue_.swap(held);
      bool tick = absl::ToInt64Milliseconds(clock_.elapsed) % 10 == 0;
      for (auto& [id, d] : drivers_) d->RunOnce(tick ? 1 : 0);
    }
    return raft_messages;
  }
  // Runs until `done` holds (checked every millisecond), at most `ms`; returns whether it held.
  bool RunUntil(const std::function<bool()>& done, int ms) {
    for (int i = 0; i < ms; ++i) {
      if (done()) return true;
      Run(1);
    }
    return done();
  }
  uint64_t Leader(uint64_t group) {
    for (auto& [id, d] : drivers_) {
      if (d->IsLeader(group)) return id;
    }
    return 0;
  }
  // A group every node is a voter of; with `keyspace` non-zero, the whole of a range keyspace.
  internal::GroupDescriptor Descriptor(uint64_t group, uint64_t keyspace = 0) {
    internal::GroupDescriptor g;
    g.set_group_id(group);
    g.set_shard_id(group);
    for (const auto& [id, d] : drivers_) g.add_voters(id);
    g.mutable_epoch()->set_generation(1);
    g.mutable_epoch()->set_conf_version(1);
    if (keyspace != 0) {
      g.set_keyspace_id(keyspace);
      g.set_span_start(sharding::KeyspaceBegin(keyspace));
      g.set_span_end(sharding::KeyspaceEnd(keyspace));
    }
    return g;
  }
  RaftDriver& node(uint64_t id) { return *drivers_.at(id); }
  const std::map<uint64_t, std::unique_ptr<RaftDriver>>& drivers() const { return drivers_; }
  void set_hold(Hold hold) { hold_ = std::move(hold); }
  // Loses the queued messages `which` selects (held back ones included), as a network would.
  void DropQueued(const std::function<bool(const Sent&)>& which) { std::erase_if(queue_, which); }
  // Snapshot streams reach their receiver as kvd's peer service takes them (by default they
  // fail at once).
  void set_deliver_snapshots(bool deliver) { deliver_snapshots_ = deliver; }
  absl::Time Now() const { return clock_.Now(); }

 private:
  class Sink final : public MessageSink {
   public:
    Sink(ScriptedNodes* net, uint64_t id) : net_(net), id_(id) {}
    void Send(std::vector<raftpb::Message> messages) override {
      for (auto& m : messages) net_->queue_.push_back({id_, std::move(m)});
    }
    void SendSnapshot(raftpb::Message m, std::unique_ptr<SnapshotSource> source,
                      std::function<void(bool)> done) override {
      auto data = net_->deliver_snapshots_ ? source->ReadAll() : absl::UnavailableError("off");
      if (!data.ok()) return done(false);
      net_->queue_.push_back(
          {id_, std::move(m), std::make_shared<std::string>(*std::move(data)), std::move(done)});
    }
    void Forward(uint64_t, raftpb::ForwardRequest, absl::Time, ForwardDone done) override {
      done(absl::UnavailableError("no forwarding between scripted nodes"));
    }

   private:
    ScriptedNodes* net_;
    uint64_t id_;
  };

  // Checked and written to files by a sink, then handed to the driver, as kvd's peer service
  // does; the sender learns whether it arrived.
  void DeliverSnapshot(Sent s) {
    RaftDriver& to = *drivers_[s.m.to()];
    auto sink = to.OpenSnapshotSink(s.m.group_id(), s.from);
    absl::Status ok = sink.ok() ? (*sink)->Append(*s.snapshot_data) : sink.status();
    if (ok.ok()) {
      auto complete = (*sink)->Finish();
      if (complete.ok()) {
        to.DeliverSnapshot(s.from, true, std::move(s.m), *std::move(complete));
      } else {
        ok = complete.status();
      }
    }
    s.snapshot_done(ok.ok());
  }

  std::string root_;
  bool deliver_snapshots_ = false;
  SimClock clock_;
  std::map<uint64_t, std::unique_ptr<storage::Engine>> engines_;
  std::map<uint64_t, std::unique_ptr<Sink>> sinks_;
  std::map<uint64_t, std::unique_ptr<RaftDriver>> drivers_;
  std::deque<Sent> queue_;
  Hold hold_;
};

}  // namespace kv::server::testing
