// Byte layout of every key and value kvstore keeps in RocksDB.
//
// Column family `data`:  shard_id (8 bytes, big-endian) + user key  ->  version (8, BE) + value
// Column family `raft`:  'e' + group (8, BE) + index (8, BE)         ->  serialized log entry
//                        'h' + group                                 ->  hard state
//                        's' + group                                 ->  snapshot metadata
// Column family `meta`:  "identity"                                  ->  NodeIdentity
//                        "backup-restored"                           ->  backup SHA-256
//                        'a' + group                                 ->  applied index (8, BE)
//                        'd' + group + client (8)                    ->  ClientSessionRecord
//                        'c' + group                                 ->  membership (ConfState)
//                        'r' + group                                 ->  ReplicaRecord
//                        'i' + group                                 ->  SnapshotInstall
//                        'p' + group                                 ->  ShardState
//
// Big-endian integers keep RocksDB's bytewise order equal to numeric order, so one shard's keys
// and one group's log are each a contiguous range. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kv::storage {

void AppendBigEndian64(std::string* out, uint64_t v);
// REQUIRES: in.size() >= 8. Reads the first 8 bytes.
uint64_t ReadBigEndian64(std::string_view in);

// data column family
std::string DataKey(uint64_t shard_id, std::string_view user_key);
// Smallest key of the shard that is >= DataKey(shard, user_key); equal to DataKey.
std::string ShardBegin(uint64_t shard_id);
// First key after every key of the shard.
std::string ShardEnd(uint64_t shard_id);
// User key of a data key (drops the shard prefix). REQUIRES: data_key.size() >= 8.
std::string_view UserKeyOf(std::string_view data_key);

// Stored value: the version followed by the user's bytes.
std::string EncodeVersionedValue(uint64_t version, std::string_view value);
struct VersionedValue {
  uint64_t version = 0;
  std::string_view value;  // points into the encoded buffer
};
// nullopt if the buffer is too short to be a versioned value (corruption).
std::optional<VersionedValue> DecodeVersionedValue(std::string_view encoded);

// raft column family
std::string RaftEntryKey(uint64_t group_id, uint64_t index);
std::string RaftHardStateKey(uint64_t group_id);
std::string RaftSnapshotKey(uint64_t group_id);
// Index from a RaftEntryKey. REQUIRES: key.size() == 17.
uint64_t RaftEntryIndexOf(std::string_view key);

// meta column family
inline constexpr std::string_view kIdentityKey = "identity";
// The backup a restore seeded this data directory from (its SHA-256), once the restore is done.
inline constexpr std::string_view kRestoredKey = "backup-restored";
std::string AppliedIndexKey(uint64_t group_id);
std::string ClientSessionKey(uint64_t group_id, uint64_t client_id);
std::string ClientSessionPrefix(uint64_t group_id);
// A received snapshot whose install has not finished (see SnapshotInstall in internal.proto).
std::string SnapshotInstallKey(uint64_t group_id);
// A shard's span and generation as it records them itself (ShardState in internal.proto).
std::string ShardStateKey(uint64_t group_id);
// This node's replica records (one per group it hosts or destroyed), ordered by group.
std::string ReplicaKey(uint64_t group_id);
inline constexpr std::string_view kReplicaPrefix = "r";
// REQUIRES: key was made by ReplicaKey.
uint64_t GroupOfReplicaKey(std::string_view key);
// REQUIRES: key was made by ClientSessionKey.
uint64_t ClientOfSessionKey(std::string_view key);

// Smallest string greater than every string that starts with `prefix`; empty if none exists
// (prefix is all 0xff), meaning "no upper bound".
std::string PrefixSuccessor(std::string_view prefix);

}  // namespace kv::storage
