// kv::Client: the C++ client library of kvstore.
//
// One Client holds a connection to each endpoint and may be shared by many threads (every method
// is thread-safe). Calls return absl::StatusOr; NOT_FOUND means the key does not exist.
//
// Retries: a call is retried, with exponential backoff and full jitter, only on codes where a
// retry is safe: UNAVAILABLE, RESOURCE_EXHAUSTED (waiting at least the server's retry hint) and
// ABORTED. Writes carry an idempotency id (client id + sequence number), so a retried write is
// applied at most once. The whole call, retries included, is bounded by the timeout; one attempt
// gets at most a third of it, and an attempt that times out moves on to the next endpoint.
//
// Circuit breakers: each endpoint has one; an endpoint whose calls keep failing (unavailable or
// timing out) is skipped until its open timeout passes and a probe succeeds.
//
// Sessions: every response carries a session token (the log position the client has seen). The
// client keeps the highest one and sends it with each request, which gives read-your-writes and
// monotonic reads at the SESSION level. session_token() exposes it so a process can hand its
// session to another.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kv/tls.h"

namespace kv {

enum class ReadConsistency { kLinearizable, kLease, kBoundedStaleness, kSession, kEventual };
enum class WriteConsistency { kMajority, kAll };

struct RetryPolicy {
  // 1 = no retries. Retries also stop when the call's timeout is spent, whichever is first.
  int max_attempts = 20;
  absl::Duration initial_backoff = absl::Milliseconds(25);
  absl::Duration max_backoff = absl::Seconds(1);
  double multiplier = 2.0;
};

struct ClientOptions {
  // host:port of one or more nodes; the client fails over between them.
  std::vector<std::string> endpoints;
  // Deadline of a whole call including retries.
  absl::Duration timeout = absl::Seconds(5);
  RetryPolicy retry;
  ReadConsistency read_consistency = ReadConsistency::kLinearizable;
  WriteConsistency write_consistency = WriteConsistency::kMajority;
  // For ReadConsistency::kBoundedStaleness.
  absl::Duration max_staleness = absl::Milliseconds(500);
  // Start the session from a token obtained earlier (e.g. by another process).
  std::string session_token;
  // TLS towards the nodes; plain text when empty.
  TlsOptions tls;
  // Bearer token naming this client (listed in the server's --client-tokens-file), or the
  // admin token; sent as `authorization: Bearer TOKEN`. Empty: none.
  std::string auth_token;
  // The keyspace every call of this client addresses ("" = "default"; kvctl --keyspace).
  std::string keyspace;
  // Reads (gets and scans, at every consistency level) go to the endpoints in turn instead of
  // to the leader, so that followers share the work of serving them: a follower serves a
  // linearizable read once a ReadIndex round through the leader confirmed its commit index
  // (shared by every read waiting), and the weaker levels on its own. Writes still go to the
  // leader. Best when every endpoint holds a replica of what is read (kvctl --spread-reads).
  bool spread_reads = false;
};

// Per-call overrides of the client's defaults.
struct ReadOptions {
  std::optional<ReadConsistency> consistency;
  std::optional<absl::Duration> max_staleness;
  std::optional<absl::Duration> timeout;
};
struct WriteOptions {
  std::optional<WriteConsistency> consistency;
  std::optional<absl::Duration> timeout;
};

struct KeyValue {
  std::string key;
  std::string value;
  uint64_t version = 0;  // log index of the write that last changed the key
};

struct WriteResult {
  uint64_t version = 0;
};

struct DeleteResult {
  uint64_t version = 0;
  bool existed = false;
};

struct CasResult {
  bool succeeded = false;
  uint64_t version = 0;             // new version when succeeded
  std::optional<KeyValue> current;  // when failed and the key exists
};

struct ScanRequest {
  // Either a range [start, end) (empty end: no upper bound) or a prefix.
  std::string start;
  std::string end;
  std::string prefix;
  uint32_t limit = 0;  // per page; 0 = server default
  std::string continuation_token;
  bool keys_only = false;
};
struct ScanPage {
  std::vector<KeyValue> kvs;
  std::string continuation_token;  // empty when the scan is complete
};

// How the client's routing cache (a created keyspace's) has done: typed redirects followed (the
// node reached held no replica of the key's shard), answers that said the cache was out of date
// (the node served the key through its shard as it knows it: after a split, an epoch change or
// a new leader), and the shards the cache holds.
struct RoutingStats {
  uint64_t redirects = 0;
  uint64_t reroutes = 0;
  size_t cached_shards = 0;
};

struct EndpointBreaker {
  std::string endpoint;
  std::string state;  // closed, open, half-open
};

class Client {
 public:
  // Validates options and creates channels; does not wait for a connection.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();

  absl::StatusOr<KeyValue> Get(const std::string& key, const ReadOptions& options = {});
  absl::StatusOr<WriteResult> Put(const std::string& key, const std::string& value,
                                  const WriteOptions& options = {});
  absl::StatusOr<DeleteResult> Delete(const std::string& key, const WriteOptions& options = {});
  // expected_version == 0 means "only if the key is absent".
  absl::StatusOr<CasResult> CompareAndSwap(const std::string& key, uint64_t expected_version,
                                           const std::string& value,
                                           const WriteOptions& options = {});
  absl::StatusOr<ScanPage> Scan(const ScanRequest& request, const ReadOptions& options = {});
  // Follows continuation tokens until the scan is complete or `max_pairs` are collected.
  absl::StatusOr<std::vector<KeyValue>> ScanAll(ScanRequest request, size_t max_pairs,
                                                const ReadOptions& options = {});

  // Asynchronous single attempts (no retries), for load generators and pipelines. `done` runs on
  // a gRPC thread and must not block. The client must outlive the calls: its destructor waits
  // for every callback to return (so it must not be destroyed from inside one).
  void PutAsync(const std::string& key, const std::string& value,
                std::function<void(absl::StatusOr<WriteResult>)> done,
                const WriteOptions& options = {});
  void GetAsync(const std::string& key, std::function<void(absl::StatusOr<KeyValue>)> done,
                const ReadOptions& options = {});

  // Highest session token seen so far.
  std::string session_token() const;
  RoutingStats routing_stats() const;
  // The client's circuit breaker per endpoint (an endpoint that keeps failing is skipped).
  std::vector<EndpointBreaker> EndpointBreakers() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kv
