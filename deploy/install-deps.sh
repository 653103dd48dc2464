#!/usr/bin/env bash
# Installs, with apt-get, every Debian 12 package kvstore needs to build, test and run.
# Idempotent: installs only what is missing; safe to run again. Needs root (or sudo).
set -euo pipefail

packages=(
  g++ cmake make pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev libgtest-dev libgmock-dev
  prometheus-cpp-dev libcli11-dev nlohmann-json3-dev libjemalloc-dev libspdlog-dev libssl-dev openssl
)
if [[ "${KV_WITH_TEST_TOOLS:-0}" == 1 ]]; then
  packages+=(iptables prometheus clang libclang-rt-14-dev python3-yaml)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
