// The load generator behind `kvctl bench`: keeps `concurrency` requests in flight with the
// client's asynchronous calls (no thread per request) and records every latency.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "kv/client.h"

namespace kv::kvctl {

enum class Workload { kPut, kGet, kMixed };

struct BenchOptions {
  Workload workload = Workload::kPut;
  uint64_t keys = 10000;
  size_t key_size = 16;
  size_t value_size = 256;
  int concurrency = 16;
  absl::Duration duration = absl::Seconds(10);
  uint64_t ops = 0;            // when > 0, stop after this many operations instead
  double read_fraction = 0.5;  // mixed workload
  bool load_keys = true;       // get/mixed: write every key first
  ReadOptions read;
  WriteOptions write;
  std::vector<int> server_pids;  // sample CPU and memory of these local processes
  uint64_t seed = 1;
  bool progress = true;        // a line on stderr every second: ops/s, p99 and errors so far
  bool each_key_once = false;  // key i for operation i (the preload writes every key once)
};

struct BenchReport {
  uint64_t ops = 0;
  uint64_t errors = 0;
  uint64_t not_found = 0;
  double seconds = 0;
  double ops_per_sec = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
  std::string first_error;
  // Summed over server_pids; -1 when not measured.
  double server_cpu_us_per_op = -1;
  double server_rss_mib = -1;
  bool interrupted = false;  // Ctrl-C: the report covers what ran until then
};

// Runs the workload (for get and mixed, after writing the keys, which it says on stderr). The
// first SIGINT stops it early and it reports what ran; a second one ends the process.
BenchReport RunBench(Client& client, const BenchOptions& options);

}  // namespace kv::kvctl
