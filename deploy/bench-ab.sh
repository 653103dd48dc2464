#!/usr/bin/env bash
# Same-run A/B benchmark of two kvd builds: ROUNDS rounds (3), each round running every build in
# turn on a fresh 3-node durable local cluster (local-cluster.sh in a temporary folder), so that
# the machine's noise falls on both alike. Per build and round: `kvctl bench` puts, then
# linearizable gets, at concurrency KV_BENCH_CONCURRENCY (256), 256-byte values, 10 000 keys,
# KV_BENCH_SECONDS (10) each, with the servers' CPU per operation. Prints every run and the
# medians. Stops only the processes it started.
#   deploy/bench-ab.sh KVD_A KVD_B [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
(($# >= 2)) || { echo "usage: $0 KVD_A KVD_B [ROUNDS]" >&2; exit 2; }
builds=("$1" "$2")
rounds=${3:-3}
seconds=${KV_BENCH_SECONDS:-10}
concurrency=${KV_BENCH_CONCURRENCY:-256}
workloads=${KV_BENCH_WORKLOADS:-put get}
kvctl=${KV_KVCTL:-$root/build/bin/kvctl}
results=$(mktemp /tmp/kv-bench-ab-XXXXXX.tsv)
for round in $(seq 1 "$rounds"); do
  for b in 0 1; do
    dir=$(mktemp -d /tmp/kv-bench-ab-XXXXXX)
    trap '"$root/deploy/local-cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    KV_KVD=${builds[$b]} "$root/deploy/local-cluster.sh" up --dir "$dir" >/dev/null
    export KVCTL_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    pids=$(cat "$dir"/node*.pid | paste -sd, -)
    started=$(date +%s)
    until "$kvctl" put bench-ready 1 >/dev/null 2>&1; do
      (($(date +%s) - started < 60)) || { echo "the cluster did not come up" >&2; exit 1; }
      sleep 0.5
    done
    for workload in $workloads; do
      json=$("$kvctl" -o json bench --workload "$workload" -c "$concurrency" --keys 10000 \
        --value-size 256 --duration "${seconds}s" --server-pids "$pids" --quiet 2>/dev/null)
      line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f\t%.0f\t%.0f\t%.1f\t%.0f" % (r["ops_per_sec"], r["p50_us"], r["p99_us"], r.get("server_cpu_us_per_op", -1), r.get("server_rss_mib", -1)))' "$json")
      printf '%s\t%s\t%s\t%s\n' "$round" "${builds[$b]}" "$workload" "$line" | tee -a "$results"
    done
    "$root/deploy/local-cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
    trap - EXIT
  done
done
echo "== medians over $rounds rounds (ops/s, p50 us, p99 us, server CPU us/op, RSS MiB)"
python3 - "$results" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, build, workload, *vals = line.rstrip("\n").split("\t")
    rows[(workload, build)].append([float(v) for v in vals])
for (workload, build), runs in sorted(rows.items()):
    med = [statistics.median(col) for col in zip(*runs)]
    print(f"{workload:4s} {build}: {med[0]:.0f} ops/s  p50 {med[1]/1000:.1f} ms  p99 {med[2]/1000:.1f} ms"
          f"  {med[3]:.1f} us/op  {med[4]:.0f} MiB  (ops/s runs: {', '.join('%.0f' % r[0] for r in runs)};"
          f" us/op runs: {', '.join('%.1f' % r[3] for r in runs)})")
PY
rm -f "$results"
