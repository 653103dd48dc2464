// Raft messages stepped into a group from its members (what a member, or anyone holding the
// peer token without TLS, can send), interleaved with ticks, proposals and reads. The core must
// never crash, and its basic invariants must hold after every step: commit within the log,
// terms never decreasing, committed entries handed out once, in order.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "raft/raft.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

void Drain(kv::raft::Raft& r, uint64_t* handed_out) {
  for (int i = 0; i < 16 && r.HasReady(); ++i) {
    kv::raft::Ready rd = r.GetReady();
    for (const auto& e : rd.committed) {
      if (e.index() != *handed_out + 1) std::abort();
      *handed_out = e.index();
    }
    if (rd.snapshot) *handed_out = std::max(*handed_out, rd.snapshot->index());
    r.Advance(rd);
    r.SetApplied(*handed_out);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kv::raftpb::ConfState conf;
  for (uint64_t id = 1; id <= 3; ++id) {
    auto* m = conf.add_voters();
    m->set_id(id);
    m->set_address("n" + std::to_string(id));
  }
  kv::raft::Config cfg;
  cfg.id = 1;
  cfg.group_id = 1;
  cfg.seed = 1;
  kv::raft::Raft r(cfg);
  kv::raft::BootstrapState b = kv::raft::Bootstrap(conf);
  r.Restore(b.hard_state, b.snapshot, b.entries, 0);
  uint64_t handed_out = 0, term = r.term();
  kv::fuzz::Records records(data, size);
  std::string_view record;
  int ops = 0;
  while (records.Next(&record) && ++ops < 200) {
    if (record.empty()) continue;
    uint8_t op = static_cast<uint8_t>(record[0]);
    record.remove_prefix(1);
    switch (op % 5) {
      case 0:
        r.Tick();
        break;
      case 1:
      case 2: {
        kv::raftpb::Message m;
        if (!m.ParseFromArray(record.data(), static_cast<int>(record.size()))) break;
        // As the driver admits them: from a member, to this node, of this group.
        m.set_group_id(1);
        m.set_to(1);
        m.set_from(2 + (op & 1));
        r.Step(m);
        break;
      }
      case 3:
        (void)r.Propose(std::string(record));
        break;
      case 4:
        r.ReadIndex(op);
        break;
    }
    Drain(r, &handed_out);
    if (r.commit() > r.last_index() || r.term() < term) std::abort();
    term = r.term();
  }
  return 0;
}
