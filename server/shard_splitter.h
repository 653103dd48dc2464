// ShardSplitter: splits keyspace shards online, when an operator asks (kvctl shard split), when a
// shard this node leads grows past a size, and when it takes more than a request rate for a
// while. The split key divides the shard's data (size) or its sampled requests (load) evenly; a
// single key carrying most of the load is reported as a hot key and never split. Splits are
// rate-limited per node. The split itself is one Raft command of the shard (SplitOp); see
// KvStateMachine and Store::StageSplit.
// Thread-safe; Split and Tick block the calling thread (never a driver or gRPC poller thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/message_sink.h"
#include "server/metadata.h"
#include "server/raft_driver.h"
#include "server/replica.h"
#include "sharding/key_range.h"
#include "sharding/keyspace.h"
#include "sharding/split_planner.h"

namespace kv::server {

struct SplitPolicy {
  uint64_t size_bytes = 64ull << 20;  // 0: no splits by size
  double load_qps = 0;                // 0: no splits by load
  absl::Duration load_for = absl::Seconds(10);
  absl::Duration min_interval = absl::Seconds(10);  // between two automatic splits on a node
};

enum class SplitReason { kCommand, kSize, kLoad };

struct SplitCounters {
  uint64_t by_command = 0, by_size = 0, by_load = 0;
  uint64_t hot_keys = 0;  // times a shard over the load was not split: one key carried it
};

// Requests per shard and a sample of their keys, recorded by the KV service.
class ShardLoad {
 public:
  void Record(uint64_t group_id, std::string_view encoded_key);
  struct Taken {
    uint64_t requests = 0;  // since the last Take
    std::vector<sharding::KeySample> samples;
  };
  Taken Take(uint64_t group_id);
  // Requests recorded for the shard since this node started (never reset; ShardMerger).
  uint64_t Total(uint64_t group_id);

 private:
  struct PerShard {
    uint64_t requests = 0;
    std::vector<sharding::KeySample> samples;
  };
  absl::Mutex mu_;
  std::map<uint64_t, PerShard> shards_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> totals_ ABSL_GUARDED_BY(mu_);
};

class ShardSplitter {
 public:
  ShardSplitter(RaftDriver* driver, const ClusterMetadata* metadata, Replica* metadata_group,
                MessageSink* transport, SplitPolicy policy, ShardLoad* load);

  // Splits shard `shard_id` at user key `at`; without one, where its data (or `load` samples)
  // divide evenly. Returns the child shard's id.
  absl::StatusOr<uint64_t> Split(uint64_t shard_id, std::optional<std::string> at,
                                 SplitReason reason,
                                 const std::vector<sharding::KeySample>* load = nullptr);
  // Once a second: the shards this node leads that grew past the size, and the shards it hosts
  // whose requests here passed the load for long enough, split (one at a time, at most one per
  // min_interval).
  void Tick(absl::Time now);
  SplitCounters counters() const;

 private:
  struct ShardSample {
    sharding::KeyRange span;
    uint64_t generation = 0;
    std::vector<sharding::KeySample> keys;  // encoded, weighted by bytes
  };
  std::optional<ShardSample> SampleShard(uint64_t group_id, const sharding::Keyspace& ks) const;
  std::optional<sharding::Keyspace> KeyspaceOfShard(const internal::GroupDescriptor& d) const;

  RaftDriver* const driver_;
  const ClusterMetadata* const metadata_;
  Replica* const metadata_group_;
  MessageSink* const transport_;
  const SplitPolicy policy_;
  ShardLoad* const load_;
  absl::Time last_split_ = absl::InfinitePast();
  std::map<uint64_t, absl::Time> hot_since_;  // shard -> when it went over the load (Tick only)
  std::atomic<uint64_t> by_command_{0}, by_size_{0}, by_load_{0}, hot_keys_{0};
};

}  // namespace kv::server
