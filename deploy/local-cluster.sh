#!/usr/bin/env bash
# A local kvstore cluster on 127.0.0.1.
#   deploy/local-cluster.sh up [--nodes 1|3|5] [--dir DIR] [--tls]
#                                                    install, build, start, print endpoints
#   deploy/local-cluster.sh status [--dir DIR]                 PIDs, liveness, cluster status
#   deploy/local-cluster.sh down [--dir DIR]                   stop the processes this script started
# Data and logs live under one folder (default: .cluster/ in the repo). Node i listens on
# 127.0.0.1:700i (client), 730i (peers), 710i (control) and 720i (metrics). Peers authenticate
# with a generated peer token, or with --tls by certificates of a throwaway CA (mTLS on the peer
# port, TLS on the client and control ports; deploy/make-certs.sh makes them with openssl).
# KVD_EXTRA_FLAGS adds flags to every node.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}
shift || true
nodes=${KV_DEFAULT_NODES:-3}
dir="$root/.cluster"
tls=""
while (($#)); do
  case $1 in
    --tls) tls=1; shift ;;
    --nodes) nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#*=}; shift ;;
    --dir) dir=$2; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
kvd="${KV_KVD:-$root/build/bin/kvd}"  # KV_KVD: another build, for A/B benchmarks
kvctl="$root/build/bin/kvctl"

client_port() { echo $((7000 + $1)); }
peer_port() { echo $((7300 + $1)); }
control_port() { echo $((7100 + $1)); }
metrics_port() { echo $((7200 + $1)); }

# True when the pid file names a live kvd that uses this cluster's folder (never another process).
ours() {
  local pidfile=$1 pid
  [[ -f $pidfile ]] || return 1
  pid=$(cat "$pidfile")
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--data-dir=$dir/" || return 1
}

endpoints() {
  local list=() i
  for i in $(seq 1 "$1"); do list+=("127.0.0.1:$(client_port "$i")"); done
  (IFS=,; echo "${list[*]}")
}

up() {
  case $nodes in 1|3|5) ;; *) echo "--nodes must be 1, 3 or 5" >&2; exit 2 ;; esac
  # A folder holds one cluster: its nodes bootstrapped with one voter list. Starting it with
  # another size would bootstrap the new nodes with a different first log entry.
  if [[ -f $dir/nodes && $(cat "$dir/nodes") != "$nodes" ]]; then
    echo "$dir holds a $(cat "$dir/nodes")-node cluster: use --nodes $(cat "$dir/nodes"), another --dir," \
      "or remove it (rm -rf $dir) to start afresh" >&2
    exit 2
  fi
  "$root/deploy/build.sh"
  mkdir -p "$dir"
  for pidfile in "$dir"/node*.pid; do
    if ours "$pidfile"; then
      echo "a cluster is already running from $dir (deploy/local-cluster.sh down first)" >&2
      exit 1
    fi
  done
  local peers=() i
  for i in $(seq 1 "$nodes"); do peers+=("$i=127.0.0.1:$(peer_port "$i")"); done
  local peer_flag
  peer_flag=$(IFS=,; echo "${peers[*]}")
  echo "$nodes" >"$dir/nodes"
  # State-changing control calls need this token; generated once per cluster folder.
  if [[ ! -s $dir/admin-token ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin-token")
  fi
  # Without TLS, peers prove they belong with this secret (never given to clients).
  if [[ ! -s $dir/peer-token ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/peer-token")
  fi
  # A folder keeps the mode it was first started in.
  if [[ -z $tls && -f $dir/tls ]]; then tls=1; fi
  if [[ -n $tls ]]; then
    "$root/deploy/make-certs.sh" "$dir/certs" "$nodes"
    touch "$dir/tls"
  fi
  for i in $(seq 1 "$nodes"); do
    local args=(--node-id="$i" --data-dir="$dir/node$i/" --listen="127.0.0.1:$(client_port "$i")"
                --peer-listen="127.0.0.1:$(peer_port "$i")")
    if [[ -n $tls ]]; then
      local c="$dir/certs"
      args+=(--tls-cert-file="$c/node-$i.pem" --tls-key-file="$c/node-$i.key" --tls-ca-file="$c/ca.pem"
             --peer-tls-cert-file="$c/node-$i.pem" --peer-tls-key-file="$c/node-$i.key"
             --peer-tls-ca-file="$c/ca.pem")
    else
      args+=(--peer-token-file="$dir/peer-token")
    fi
    if ((nodes > 1)); then args+=(--peers="$peer_flag"); fi
    if [[ $("$kvd" --help 2>/dev/null || true) == *--control-listen* ]]; then
      args+=(--control-listen="127.0.0.1:$(control_port "$i")"
             --metrics-listen="127.0.0.1:$(metrics_port "$i")"
             --admin-token-file="$dir/admin-token")
    fi
    # Extra kvd flags for every node, e.g. KVD_EXTRA_FLAGS="--region=eu --quiesce-after-ticks=0".
    read -r -a extra <<<"${KVD_EXTRA_FLAGS:-}"
    # The daemons must not inherit the caller's open files (a lock the caller holds would stay
    # held by them): every descriptor above stderr is closed first.
    (
      for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        if ((fd > 2)); then eval "exec ${fd}>&-" 2>/dev/null || true; fi
      done
      exec nohup "$kvd" "${args[@]}" "${extra[@]}" >>"$dir/node$i.log" 2>&1 </dev/null
    ) &
    echo $! >"$dir/node$i.pid"
  done
  local eps
  eps=$(endpoints "$nodes")
  local tls_flags=() tls_env=""
  if [[ -n $tls ]]; then
    tls_flags=(--cacert="$dir/certs/ca.pem" --cert="$dir/certs/admin.pem" --key="$dir/certs/admin.key")
    tls_env="
  export KVCTL_CACERT=$dir/certs/ca.pem KVCTL_CERT=$dir/certs/admin.pem KVCTL_KEY=$dir/certs/admin.key"
  fi
  for _ in $(seq 100); do
    if "$kvctl" "${tls_flags[@]}" --endpoints="$eps" --timeout=1s get __probe__ >/dev/null 2>&1 ||
       [[ $? == 1 ]]; then break; fi
    sleep 0.2
  done
  echo
  echo "kvstore: $nodes node(s) on 127.0.0.1${tls:+ with TLS (certificates in $dir/certs)}, data and logs in $dir"
  local sidecar=0
  if [[ $("$kvd" --help 2>/dev/null || true) == *--control-listen* ]]; then sidecar=1; fi
  for i in $(seq 1 "$nodes"); do
    if ((sidecar)); then
      printf '  node %d  pid %-7s client 127.0.0.1:%d  peer 127.0.0.1:%d  control 127.0.0.1:%d  metrics http://127.0.0.1:%d/metrics\n' \
        "$i" "$(cat "$dir/node$i.pid")" "$(client_port "$i")" "$(peer_port "$i")" "$(control_port "$i")" "$(metrics_port "$i")"
    else
      printf '  node %d  pid %-7s client 127.0.0.1:%d  peer 127.0.0.1:%d  log %s\n' \
        "$i" "$(cat "$dir/node$i.pid")" "$(client_port "$i")" "$(peer_port "$i")" "$dir/node$i.log"
    fi
  done
  local ceps=() i2
  for i2 in $(seq 1 "$nodes"); do ceps+=("127.0.0.1:$(control_port "$i2")"); done
  cat <<EOT

Try:
  export KVCTL_ENDPOINTS=$eps
  export KVCTL_CONTROL_ENDPOINTS=$(IFS=,; echo "${ceps[*]}")
  export KVCTL_ADMIN_TOKEN=\$(cat $dir/admin-token)$tls_env
  $kvctl put greeting hello
  $kvctl get greeting
  $kvctl scan --prefix gr
  $kvctl cas greeting --expect-version VERSION 'hello again'   # VERSION as printed by put
  $kvctl cluster status
  $kvctl health
  $kvctl killswitch engage --mode read-only --reason "maintenance"; $kvctl killswitch release
  $kvctl bench --workload put --concurrency 64 --duration 5s
Stop with: deploy/local-cluster.sh down
EOT
}

status() {
  local n=0 i
  [[ -f $dir/nodes ]] && n=$(cat "$dir/nodes")
  if ((n == 0)); then echo "no cluster in $dir"; exit 1; fi
  for i in $(seq 1 "$n"); do
    if ours "$dir/node$i.pid"; then
      echo "node $i: running (pid $(cat "$dir/node$i.pid")) client 127.0.0.1:$(client_port "$i")"
    else
      echo "node $i: not running"
    fi
  done
  local tls_flags=()
  if [[ -f $dir/tls ]]; then
    tls_flags=(--cacert="$dir/certs/ca.pem" --cert="$dir/certs/admin.pem" --key="$dir/certs/admin.key")
  fi
  if [[ $("$kvctl" --help 2>/dev/null || true) == *cluster* ]]; then
    "$kvctl" "${tls_flags[@]}" --endpoints="$(endpoints "$n")" cluster status || true
  fi
}

down() {
  local stopped=0 pidfile pid
  for pidfile in "$dir"/node*.pid; do
    [[ -e $pidfile ]] || continue
    if ours "$pidfile"; then
      pid=$(cat "$pidfile")
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
      stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
  done
  echo "stopped $stopped kvd process(es); data kept in $dir (rm -rf it to start afresh)"
}

case $cmd in
  up) up ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up [--nodes 1|3|5] [--dir DIR] [--tls] | status | down" >&2; exit 2 ;;
esac
