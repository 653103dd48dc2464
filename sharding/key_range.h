// KeyRange: a span [start, end) of the encoded key space (key_codec.h). Both ends are always
// explicit: a keyspace's last shard ends at KeyspaceEnd, never at "unbounded".
// Also the initial spans of a new keyspace. Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sharding/keyspace.h"

namespace kv::sharding {

struct KeyRange {
  std::string start, end;

  bool Contains(std::string_view key) const { return key >= start && key < end; }
  bool Overlaps(const KeyRange& other) const { return start < other.end && other.start < end; }
  bool Covers(const KeyRange& other) const { return start <= other.start && other.end <= end; }
  bool empty() const { return start >= end; }
  bool operator==(const KeyRange& other) const = default;
};

// The spans a new keyspace starts with, in order:
//   range  split points a < m < t give [begin, a), [a, m), [m, t), [t, end); without split points,
//          `shards` is ignored and the keyspace starts as one shard (it splits as it grows);
//   hash   `shards` (1-65536) equal slot spans;
//   geo    one span per region.
// Refuses what would not partition the keyspace (unsorted or repeated split points, a hash
// keyspace with more shards than slots, a geo keyspace without regions or with a bad region).
absl::StatusOr<std::vector<KeyRange>> InitialSpans(const Keyspace& keyspace, uint32_t shards,
                                                   const std::vector<std::string>& split_points);

// Whether `spans` (in any order) are disjoint and together cover exactly [begin, end).
bool PartitionsExactly(std::vector<KeyRange> spans, std::string_view begin, std::string_view end);

}  // namespace kv::sharding
