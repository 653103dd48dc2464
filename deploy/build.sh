#!/usr/bin/env bash
# Installs missing packages, then configures and builds kvstore into build/ (binaries in
# build/bin/). Uses ccache when present, with a cache that survives between builds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/deploy/install-deps.sh"
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/kvstore-ccache}
build_type=${KV_BUILD_TYPE:-RelWithDebInfo}
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE="$build_type" ${KV_CMAKE_ARGS:-} >/dev/null
cmake --build "$root/build" -j"$(nproc)"
