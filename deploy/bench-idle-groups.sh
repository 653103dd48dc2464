#!/usr/bin/env bash
# What idle Raft groups cost. For each count: a fresh 3-node local cluster (local-cluster.sh, in a
# temporary folder), COUNT empty groups created on top of the two every node has, a wait until
# they are all quiet, then a quiet interval measured on every node: CPU (utime + stime from
# /proc), Raft messages sent (kv_raft_messages_sent_total: group traffic and liveness beats) and
# resident memory. Stops only the processes it started.
#   deploy/bench-idle-groups.sh [COUNT...]        default: 0 100 1000 (KV_BENCH_SECONDS=20)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
counts=("$@")
((${#counts[@]})) || counts=(0 100 1000)
seconds=${KV_BENCH_SECONDS:-20}
kvctl="$root/build/bin/kvctl"
hz=$(getconf CLK_TCK)

metric() {  # metric PORT NAME LABELS -> value (0 when absent)
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" -v l="$3" \
    '$1 == m"{"l"}" { v = $2 } END { print v + 0 }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

printf '%-8s %-10s %-16s %-18s %-18s %-12s\n' groups quiet-after "cpu %/node" "msgs/s per node" \
  "msgs/s per pair" "RSS MB/node"
for n in "${counts[@]}"; do
  dir=$(mktemp -d /tmp/kv-idle-groups-XXXXXX)
  trap '"$root/deploy/local-cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  "$root/deploy/local-cluster.sh" up --dir "$dir" >/dev/null
  export KVCTL_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  KVCTL_ADMIN_TOKEN=$(cat "$dir/admin-token")
  export KVCTL_ADMIN_TOKEN
  left=$n
  started=$(date +%s)
  while ((left > 0)); do
    batch=$((left > 1000 ? 1000 : left))
    if "$kvctl" group create --count "$batch" >/dev/null 2>&1; then
      left=$((left - batch))
    elif (($(date +%s) - started > 60)); then
      echo "cannot create groups" >&2
      exit 1
    else
      sleep 0.5
    fi
  done
  # Every group on every node quiet (bounded: 120 s).
  quiet_at=""
  for _ in $(seq 240); do
    active=0
    for i in 1 2 3; do
      active=$((active + $(metric $((7200 + i)) kv_raft_groups 'state="active"')))
      quiet=$(metric $((7200 + i)) kv_raft_groups 'state="quiet"')
      ((quiet >= n)) || active=$((active + 1))
    done
    if ((active == 0)); then
      quiet_at=$(($(date +%s) - started))s
      break
    fi
    sleep 0.5
  done
  sleep 2  # let the last quiesce heartbeats and metrics settle
  pids=() cpu0=() msg0=()
  for i in 1 2 3; do
    pid=$(cat "$dir/node$i.pid")
    pids+=("$pid")
    cpu0+=("$(cpu_ticks "$pid")")
    msg0+=("$(( $(metric $((7200 + i)) kv_raft_messages_sent_total 'kind="raft"') + \
               $(metric $((7200 + i)) kv_raft_messages_sent_total 'kind="beat"') ))")
  done
  sleep "$seconds"
  cpu=0 msgs=0 rss=0
  for i in 0 1 2; do
    cpu=$((cpu + $(cpu_ticks "${pids[$i]}") - cpu0[i]))
    m=$(( $(metric $((7201 + i)) kv_raft_messages_sent_total 'kind="raft"') + \
          $(metric $((7201 + i)) kv_raft_messages_sent_total 'kind="beat"') ))
    msgs=$((msgs + m - msg0[i]))
    rss=$((rss + $(rss_kb "${pids[$i]}")))
  done
  awk -v g=$((n + 2)) -v q="${quiet_at:-never}" -v c="$cpu" -v hz="$hz" -v s="$seconds" \
    -v m="$msgs" -v r="$rss" 'BEGIN {
      printf "%-8d %-10s %-16.2f %-18.1f %-18.1f %-12.1f\n", g, q, 100 * c / hz / s / 3,
        m / s / 3, m / s / 3, r / 1024 / 3 }'
  "$root/deploy/local-cluster.sh" down --dir "$dir" >/dev/null
  rm -rf "$dir"
  trap - EXIT
done
