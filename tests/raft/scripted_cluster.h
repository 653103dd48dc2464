// A few Raft nodes wired by an in-memory, synchronous network, for scripted tests of the core:
// every Ready is processed at once (persisted, sent, applied) and messages are delivered until
// the network is quiet, except to isolated nodes or what `drop` refuses.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "raft/raft.h"

namespace kv::raft::testing {

inline raftpb::ConfState Voters(std::initializer_list<uint64_t> ids) {
  raftpb::ConfState c;
  for (auto id : ids) {
    auto* m = c.add_voters();
    m->set_id(id);
    m->set_address("n" + std::to_string(id));
  }
  return c;
}

class Cluster {
 public:
  explicit Cluster(int n, std::function<void(Config&)> tweak = nullptr) {
    raftpb::ConfState conf;
    for (int i = 1; i <= n; ++i) *conf.add_voters() = Voters({static_cast<uint64_t>(i)}).voters(0);
    for (int i = 1; i <= n; ++i) {
      Config cfg;
      cfg.id = static_cast<uint64_t>(i);
      cfg.group_id = 1;
      cfg.seed = 7;
      if (tweak) tweak(cfg);
      auto r = std::make_unique<Raft>(cfg);
      BootstrapState b = Bootstrap(conf);
      r->Restore(b.hard_state, b.snapshot, b.entries, 0);
      nodes[cfg.id] = std::move(r);
    }
  }
  Raft& operator[](uint64_t id) { return *nodes[id]; }

  // Processes every Ready and delivers messages until the network is quiet.
  void Pump() {
    for (int rounds = 0; rounds < 1000; ++rounds) {
      bool any = false;
      for (auto& [id, r] : nodes) {
        while (r->HasReady()) {
          any = true;
          Ready rd = r->GetReady();
          for (auto& m : rd.messages) queue.push_back(m);
          for (const auto& e : rd.committed) committed[id].push_back(e);
          for (const auto& rs : rd.read_states) read_states[id].push_back(rs);
          for (auto f : rd.failed_reads) failed_reads[id].push_back(f);
          for (auto p : rd.snapshot_requests) snapshot_requests[id].push_back(p);
          r->SetApplied(r->handed_out());
          r->Advance(rd);
        }
      }
      while (!queue.empty()) {
        any = true;
        raftpb::Message m = queue.front();
        queue.pop_front();
        sent.push_back(m);
        if (isolated.contains(m.from()) || isolated.contains(m.to())) continue;
        if (drop && drop(m)) continue;
        if (nodes.contains(m.to())) nodes[m.to()]->Step(m);
      }
      if (!any) return;
    }
    FAIL() << "network did not settle";
  }
  void Tick(int times = 1) {
    for (int i = 0; i < times; ++i) {
      for (auto& [id, r] : nodes) r->Tick();
      Pump();
    }
  }
  // Forces node `id` to start an election now and lets it finish.
  void Elect(uint64_t id) {
    for (int i = 0; i < 100 && nodes[id]->role() != Role::kLeader; ++i) {
      nodes[id]->Tick();
      Pump();
    }
  }
  uint64_t Leader() {
    for (auto& [id, r] : nodes) {
      if (r->role() == Role::kLeader) return id;
    }
    return 0;
  }
  int Count(uint64_t from, uint64_t to, raftpb::MessageType type) {
    int n = 0;
    for (const auto& m : sent) {
      if (m.from() == from && m.to() == to && m.type() == type) ++n;
    }
    return n;
  }

  std::map<uint64_t, std::unique_ptr<Raft>> nodes;
  std::deque<raftpb::Message> queue;
  std::vector<raftpb::Message> sent;
  std::set<uint64_t> isolated;
  std::function<bool(const raftpb::Message&)> drop;
  std::map<uint64_t, std::vector<raftpb::Entry>> committed;
  std::map<uint64_t, std::vector<ReadState>> read_states;
  std::map<uint64_t, std::vector<uint64_t>> failed_reads;
  std::map<uint64_t, std::vector<uint64_t>> snapshot_requests;
};

}  // namespace kv::raft::testing
