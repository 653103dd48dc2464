#!/usr/bin/env bash
# Installs missing packages, builds, and runs the whole test suite with ctest.
# KV_SOAK=1 also runs the slow soak tests (more simulation seeds, longer chaos).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
KV_WITH_TEST_TOOLS=1 "$root/deploy/install-deps.sh"
"$root/deploy/build.sh"
cd "$root/build"
ctest --output-on-failure -j"$(nproc)" --timeout 900 "$@"
