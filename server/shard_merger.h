// ShardMerger: merges two adjacent shards of a range keyspace into one, online, when an
// operator asks (kvctl shard merge) or when both have stayed small and cold for a while.
//
// The protocol (internal.proto: FreezeOp, MergeOp, AbortMergeOp, ThawOp), run here on a node
// that hosts both shards (their voter sets must be equal; nothing moves):
//   1. The survivor is the shard whose log is further along; the other is absorbed. Versions
//      are log indexes, so the survivor's next index must exceed every version in the absorbed
//      span: the merge applies only at an index above the absorbed shard's freeze.
//   2. The absorbed shard freezes, with WRITE_ALL: every voter applied the freeze (fsynced)
//      before step 3. A frozen shard applies no data command, split or membership change and
//      serves no read.
//   3. The survivor applies a MergeOp: every replica grows its span, takes the absorbed shard's
//      exactly-once records, and retires its own replica of the absorbed shard in the same
//      batch (the data stays: data keys are prefixed by keyspace, not by shard).
//   4. The routing map learns of the grown survivor, and the absorbed shard's descriptor goes.
// When step 3 is refused or its outcome is unknown, an AbortMergeOp in the survivor's log
// settles that the merge never happens, and only then does the absorbed shard thaw. A shard left
// frozen by a merger that stopped is settled the same way by its leader's Tick.
// Thread-safe; Merge and Tick block the calling thread (never a driver or gRPC poller thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/message_sink.h"
#include "server/metadata.h"
#include "server/raft_driver.h"
#include "server/replica.h"
#include "server/shard_splitter.h"

namespace kv::server {

struct MergePolicy {
  // Automatic merges: both shards under this size, together under half the split size, each
  // under cold_qps requests a second here, and neither split, merged or busy for quiet_for.
  // 0: no automatic merges (kvctl shard merge still works).
  uint64_t size_bytes = 16ull << 20;
  uint64_t split_size_bytes = 64ull << 20;
  double cold_qps = 1;
  absl::Duration quiet_for = absl::Minutes(10);
  absl::Duration min_interval = absl::Seconds(10);  // between two automatic merges on a node
  // A shard frozen this long (as seen by its leader here) has its merge settled and thaws.
  absl::Duration settle_frozen_after = absl::Seconds(30);
};

struct MergeCounters {
  uint64_t merged = 0, aborted = 0, thawed = 0;
};

struct MergeOutcome {
  uint64_t survivor = 0, absorbed = 0;
};

class ShardMerger {
 public:
  ShardMerger(RaftDriver* driver, const ClusterMetadata* metadata, Replica* metadata_group,
              MessageSink* transport, MergePolicy policy, ShardLoad* load);

  // Merges shard `shard_id` with the next shard of its keyspace (the one whose span starts
  // where its own ends).
  absl::StatusOr<MergeOutcome> Merge(uint64_t shard_id);
  // Once a second: settles freezes left behind, tidies the routing map after merges, and
  // merges one pair of small cold shards this node leads.
  void Tick(absl::Time now);
  MergeCounters counters() const;

 private:
  // The merge of `absorbed`'s freeze at `freeze_index` into `survivor` will never happen:
  // recorded in the survivor's log, then the absorbed shard thaws. OK when it merged instead.
  absl::StatusOr<bool> ThawAbsorbed(uint64_t absorbed, uint64_t survivor, uint64_t freeze_index,
                                    absl::Time deadline);
  // Proposes no-ops to the survivor until its log has passed `index`.
  absl::StatusOr<WriteOutcome> PadBeyond(Replica* survivor, uint64_t index, absl::Time deadline);
  // Returns whether it merged after all.
  absl::StatusOr<bool> Settle(uint64_t absorbed, uint64_t survivor, uint64_t freeze_index,
                              absl::Time deadline);
  // The routing map: the grown survivor in, the absorbed shard out.
  absl::Status Publish(uint64_t survivor, uint64_t absorbed, uint64_t merge_index,
                       absl::Time deadline);
  void MergeColdShards(absl::Time now, const std::vector<RaftDriver::MergeState>& states);

  RaftDriver* const driver_;
  const ClusterMetadata* const metadata_;
  Replica* const metadata_group_;
  MessageSink* const transport_;
  const MergePolicy policy_;
  ShardLoad* const load_;
  // Tick only.
  struct Quiet {
    uint64_t generation = 0;
    uint64_t requests = 0;
    absl::Time since;
    absl::Time seen;
  };
  std::map<uint64_t, Quiet> quiet_;
  std::map<std::pair<uint64_t, uint64_t>, absl::Time> frozen_seen_;  // (group, freeze) -> first
  absl::Time last_merge_ = absl::InfinitePast();
  std::atomic<uint64_t> merged_{0}, aborted_{0}, thawed_{0};
};

}  // namespace kv::server
