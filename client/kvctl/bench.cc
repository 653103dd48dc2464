#include "client/kvctl/bench.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace kv::kvctl {
namespace {

// Set by the first Ctrl-C: every slot stops taking new operations.
std::atomic<bool> interrupted{false};
void OnInterrupt(int) {
  interrupted.store(true);
  signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process
}

// Latencies of the current second, for the progress line: a lock-free histogram with four
// buckets per power of two (about 19% wide), so p99 costs the hot path one atomic increment.
class IntervalHistogram {
 public:
  void Add(double us) {
    double v = std::max(us, 1.0);
    auto b = static_cast<size_t>(std::log2(v) * 4);
    buckets_[std::min(b, kBuckets - 1)].fetch_add(1, std::memory_order_relaxed);
  }
  // Drains the histogram; returns the count and the p99's upper bound in microseconds.
  std::pair<uint64_t, double> TakeP99() {
    std::array<uint64_t, kBuckets> counts;
    uint64_t total = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      counts[i] = buckets_[i].exchange(0, std::memory_order_relaxed);
      total += counts[i];
    }
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts[i];
      if (total > 0 && seen * 100 >= total * 99) return {total, std::exp2((i + 1) / 4.0)};
    }
    return {total, 0};
  }

 private:
  static constexpr size_t kBuckets = 128;
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
};

// CPU time (user + system) of a process in microseconds, from /proc; -1 if unreadable.
double ProcessCpuMicros(int pid) {
  std::ifstream f(absl::StrFormat("/proc/%d/stat", pid));
  std::string line;
  if (!std::getline(f, line)) return -1;
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ProcessRssMiB(int pid) {
  std::ifstream f(absl::StrFormat("/proc/%d/status", pid));
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

std::string KeyFor(uint64_t i, size_t size) {
  std::string key = absl::StrFormat("k%0*d", static_cast<int>(std::max<size_t>(size, 2) - 1), i);
  key.resize(std::max<size_t>(size, 1), 'k');
  return key;
}

// One in-flight request slot: issues an operation, and from its completion the next one.
struct Runner {
  Client* client;
  const BenchOptions* options;
  std::string value;
  absl::Time stop_at;
  std::atomic<uint64_t> issued{0};
  std::atomic<uint64_t> next_key{0};
  std::atomic<int> active{0};
  absl::Notification all_done;
  absl::Mutex mu;
  std::vector<double> latencies_us ABSL_GUARDED_BY(mu);
  uint64_t errors ABSL_GUARDED_BY(mu) = 0;
  uint64_t not_found ABSL_GUARDED_BY(mu) = 0;
  std::string first_error ABSL_GUARDED_BY(mu);

  struct Slot {
    std::mt19937_64 rng;
    std::vector<double> latencies;
  };

  IntervalHistogram interval;
  std::atomic<uint64_t> errors_so_far{0};

  bool TakeTicket() {
    if (interrupted.load(std::memory_order_relaxed)) return false;
    if (options->ops > 0) return issued.fetch_add(1) < options->ops;
    return absl::Now() < stop_at;
  }

  void Record(Slot* slot, absl::Time started, const absl::Status& s) {
    double us = absl::ToDoubleMicroseconds(absl::Now() - started);
    slot->latencies.push_back(us);
    interval.Add(us);
    if (s.ok()) return;
    if (!absl::IsNotFound(s)) errors_so_far.fetch_add(1, std::memory_order_relaxed);
    absl::MutexLock lock(&mu);
    if (absl::IsNotFound(s)) {
      ++not_found;
    } else {
      ++errors;
      if (first_error.empty()) first_error = s.ToString();
    }
  }

  void Finish(Slot* slot) {
    {
      absl::MutexLock lock(&mu);
      latencies_us.insert(latencies_us.end(), slot->latencies.begin(), slot->latencies.end());
    }
    delete slot;
    if (active.fetch_sub(1) == 1) all_done.Notify();
  }

  void Next(Slot* slot) {
    if (!TakeTicket()) {
      Finish(slot);
      return;
    }
    uint64_t k = options->each_key_once ? next_key.fetch_add(1) % options->keys
                                        : slot->rng() % options->keys;
    std::string key = KeyFor(k, options->key_size);
    bool read = options->workload == Workload::kGet ||
                (options->workload == Workload::kMixed &&
                 std::uniform_real_distribution<double>(0, 1)(slot->rng) < options->read_fraction);
    absl::Time started = absl::Now();
    if (read) {
      client->GetAsync(
          key,
          [this, slot, started](absl::StatusOr<KeyValue> r) {
            Record(slot, started, r.status());
            Next(slot);
          },
          options->read);
    } else {
      client->PutAsync(
          key, value,
          [this, slot, started](absl::StatusOr<WriteResult> r) {
            Record(slot, started, r.status());
            Next(slot);
          },
          options->write);
    }
  }
};

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

BenchReport Drive(Client& client, const BenchOptions& options, const char* phase) {
  Runner runner;
  runner.client = &client;
  runner.options = &options;
  runner.value.assign(options.value_size, 'v');
  int concurrency = std::max(1, options.concurrency);
  runner.active.store(concurrency);

  std::vector<double> cpu_before;
  for (int pid : options.server_pids) cpu_before.push_back(ProcessCpuMicros(pid));
  absl::Time start = absl::Now();
  runner.stop_at = start + options.duration;
  for (int i = 0; i < concurrency; ++i) {
    auto* slot = new Runner::Slot();
    slot->rng.seed(options.seed * 7919 + static_cast<uint64_t>(i));
    runner.Next(slot);
  }
  // A progress line a second (stderr: stdout stays the report), until every slot finished.
  for (int second = 1; !runner.all_done.WaitForNotificationWithTimeout(absl::Seconds(1));
       ++second) {
    auto [count, p99_us] = runner.interval.TakeP99();
    if (options.progress) {
      std::fprintf(stderr, "%s %3ds: %8lu ops/s  p99 %8.1f ms  errors so far %lu\n", phase, second,
                   static_cast<unsigned long>(count), p99_us / 1000.0,
                   static_cast<unsigned long>(runner.errors_so_far.load()));
    }
  }
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  BenchReport report;
  absl::MutexLock lock(&runner.mu);
  auto& lat = runner.latencies_us;
  std::sort(lat.begin(), lat.end());
  report.ops = lat.size();
  report.errors = runner.errors;
  report.not_found = runner.not_found;
  report.first_error = runner.first_error;
  report.seconds = seconds;
  report.ops_per_sec = seconds > 0 ? static_cast<double>(report.ops - report.errors) / seconds : 0;
  report.p50_us = Percentile(lat, 0.50);
  report.p99_us = Percentile(lat, 0.99);
  report.p999_us = Percentile(lat, 0.999);
  report.max_us = lat.empty() ? 0 : lat.back();
  report.interrupted = interrupted.load();
  if (!options.server_pids.empty()) {
    double cpu = 0, rss = 0;
    for (size_t i = 0; i < options.server_pids.size(); ++i) {
      cpu += ProcessCpuMicros(options.server_pids[i]) - cpu_before[i];
      rss += ProcessRssMiB(options.server_pids[i]);
    }
    uint64_t good = report.ops - report.errors;
    report.server_cpu_us_per_op = good > 0 ? cpu / static_cast<double>(good) : -1;
    report.server_rss_mib = rss;
  }
  return report;
}

}  // namespace

BenchReport RunBench(Client& client, const BenchOptions& options) {
  interrupted.store(false);
  struct sigaction on_interrupt {
  }, before{};
  on_interrupt.sa_handler = OnInterrupt;
  sigemptyset(&on_interrupt.sa_mask);
  sigaction(SIGINT, &on_interrupt, &before);
  if (options.workload != Workload::kPut && options.load_keys) {
    BenchOptions load = options;
    load.workload = Workload::kPut;
    load.concurrency = std::max(options.concurrency, 16);
    load.server_pids.clear();
    load.ops = options.keys;
    load.each_key_once = true;  // every key exists when the reads start
    std::fprintf(stderr,
                 "preloading: %lu puts of %zu-byte values, one per key, first (--no-load skips "
                 "it); not part of the report\n",
                 static_cast<unsigned long>(load.ops), options.value_size);
    Drive(client, load, "preload");
  }
  BenchReport report = interrupted.load() ? BenchReport{} : Drive(client, options, "bench");
  report.interrupted = interrupted.load();
  sigaction(SIGINT, &before, nullptr);
  return report;
}

}  // namespace kv::kvctl
