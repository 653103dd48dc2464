#!/usr/bin/env bash
# The compose file for real, with Debian's podman: builds the kvstore image and a Prometheus
# image from Debian's package, starts kvd1-3 and Prometheus, and checks put/get through every
# node, a failover, the grpc.health.v1 health checks, that Prometheus scrapes all three nodes,
# and that data survives `down` and `up`. Removes the containers, volumes and network it created
# (and the base image, if it had to make one); the two images stay for the next run's cache.
#
#   KV_CONTAINER_TEST=1 tests/container/compose_test.sh
#
# Needs root (apt-get, podman) and the compose file's host ports free (127.0.0.1:7001, 7101,
# 9090, 3000): run it alone, not inside the parallel ctest run. About 5-8 minutes on 2 cores.
set -euo pipefail
if [[ "${KV_CONTAINER_TEST:-0}" != 1 ]]; then
  echo "compose_test: set KV_CONTAINER_TEST=1 to run it (it builds images and binds host ports)"
  exit 77
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
project="kvct$$"
work=$(mktemp -d /tmp/kv-container-test.XXXXXX)
made_base=0
made_certs=0

# The two settings these VMs need (../shared/BUILD-NOTES.md), in a file of our own.
cat > "$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$work/containers.conf"

need=()
for p in podman podman-compose debootstrap runc curl python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

compose() { podman-compose -p "$project" -f deploy/docker-compose.yml "$@" >>"$work/compose.log" 2>&1; }
compose_tls() {
  podman-compose -p "${project}tls" -f deploy/docker-compose-tls.yml "$@" >>"$work/compose.log" 2>&1
}
cleanup() {
  local rc=$?
  compose down -v || true
  compose_tls down -v || true
  if ((made_certs)); then rm -rf deploy/certs; fi
  # podman-compose can leave a volume or the network behind; remove what carries our name only.
  podman volume ls -q | grep "^${project}" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  podman network ls -q | grep "^${project}" | xargs -r podman network rm -f >/dev/null 2>&1 || true
  if ((made_base)); then podman rmi docker.io/library/debian:12 docker.io/library/debian:12-slim || true; fi
  if ((rc != 0)); then
    echo "compose_test: FAILED; compose log:" >&2
    tail -n 40 "$work/compose.log" >&2 || true
    for n in 1 2 3; do podman logs "${project}_kvd${n}_1" 2>&1 | tail -n 15 >&2 || true; done
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

step() { echo "compose_test: $*"; }
# Runs "$@" until it succeeds, at most $1 seconds.
retry() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "compose_test: gave up after ${limit}s: $*" >&2
      return 1
    fi
    sleep 1
  done
}

if ! podman image exists docker.io/library/debian:12; then
  step "making the Debian 12 base image with debootstrap (no registry is reachable)"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$work/rootfs" -c . | podman import - docker.io/library/debian:12 >/dev/null
  podman tag docker.io/library/debian:12 docker.io/library/debian:12-slim
  rm -rf "$work/rootfs"
  made_base=1
fi
step "building the kvstore image"
podman build --network host -q -f deploy/Dockerfile -t kvstore:latest . >/dev/null
step "building the Prometheus image (Debian's package)"
podman build --network host -q -t kvstore-prometheus:latest deploy/prometheus >/dev/null
step "checking the image holds one copy of the client library"
libs=$(podman run --rm --entrypoint /bin/sh kvstore:latest -c 'ls /usr/local/lib/ | grep -c libkvclient')
[[ "$libs" == 1 ]] || { echo "expected one libkvclient file, found $libs" >&2; exit 1; }

step "starting kvd1-3 and Prometheus"
compose up -d kvd1 kvd2 kvd3 prometheus
ctl() { local n=$1; shift; podman exec "${project}_kvd${n}_1" kvctl --endpoints=127.0.0.1:7001 "$@"; }
retry 60 ctl 1 put probe ok

step "put and get through every node"
for n in 1 2 3; do retry 30 ctl "$n" put "key-$n" "value-$n"; done
for n in 1 2 3; do
  for k in 1 2 3; do
    got=$(ctl "$n" get "key-$k")
    [[ "$got" == "value-$k" ]] || { echo "node $n read key-$k as '$got'" >&2; exit 1; }
  done
done
step "the published client port answers on the host's loopback"
host_kvctl="$root/build/bin/kvctl"
if [[ -x "$host_kvctl" ]]; then
  got=$("$host_kvctl" --endpoints=127.0.0.1:7001 get key-2)
  [[ "$got" == "value-2" ]] || { echo "host read key-2 as '$got'" >&2; exit 1; }
fi

step "health checks (grpc.health.v1 through kvctl health --probe)"
# (podman without systemd cannot schedule the checks itself; `healthcheck run` runs one now.)
for n in 1 2 3; do retry 30 podman healthcheck run "${project}_kvd${n}_1"; done

step "failover: stopping the leader"
leader=$(ctl 1 -o json cluster status | python3 -c 'import json,sys; print(json.load(sys.stdin)["nodes"][0]["leader_id"])')
[[ "$leader" =~ ^[123]$ ]] || { echo "no leader: $leader" >&2; exit 1; }
podman stop -t 5 "${project}_kvd${leader}_1" >/dev/null 2>&1
other=$(( leader % 3 + 1 ))
retry 30 ctl "$other" put after-failover yes
podman start "${project}_kvd${leader}_1" >/dev/null 2>&1
retry 30 ctl "$leader" get after-failover
got=$(ctl "$leader" get after-failover)
[[ "$got" == "yes" ]] || { echo "the old leader reads '$got'" >&2; exit 1; }

step "Prometheus scrapes all three nodes"
scraped() {
  curl -fsS 'http://127.0.0.1:9090/api/v1/query' --data-urlencode 'query=sum(up{job="kvd"})' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; sys.exit(0 if r and float(r[0]["value"][1]) == 3 else 1)'
}
retry 60 scraped

step "data survives down and up (named volumes)"
compose down
compose up -d kvd1 kvd2 kvd3
retry 60 ctl 1 get key-3
got=$(ctl 1 get key-3)
[[ "$got" == "value-3" ]] || { echo "after down/up key-3 is '$got'" >&2; exit 1; }
compose down

step "TLS: clients and control over TLS, peers over mTLS (deploy/docker-compose-tls.yml)"
if [[ ! -d deploy/certs ]]; then
  KV_CERT_HOST_PREFIX=kvd deploy/make-certs.sh deploy/certs 3 >/dev/null
  chown 10001 deploy/certs/*.key
  made_certs=1
fi
compose_tls up -d kvd1 kvd2 kvd3
tctl() {
  local n=$1; shift
  podman exec "${project}tls_kvd${n}_1" kvctl --endpoints=127.0.0.1:7001 \
    --cacert=/etc/kvd/certs/ca.pem "$@"
}
retry 60 tctl 1 put tls-probe ok
for n in 1 2 3; do retry 30 tctl "$n" put "tls-$n" "secret-$n"; done
for n in 1 2 3; do
  got=$(tctl "$n" get tls-1)
  [[ "$got" == "secret-1" ]] || { echo "node $n read tls-1 as '$got' over TLS" >&2; exit 1; }
done
for n in 1 2 3; do retry 30 podman healthcheck run "${project}tls_kvd${n}_1"; done
if podman exec "${project}tls_kvd1_1" kvctl --endpoints=127.0.0.1:7001 --timeout=2s get tls-1 \
    >/dev/null 2>&1; then
  echo "a plain-text client was served by a TLS node" >&2
  exit 1
fi
step "PASSED"
