#!/usr/bin/env bash
# Installs the client library into a scratch prefix, builds client/examples as a separate project
# with find_package(kvclient), and runs it and the installed kvctl against a real kvd.
set -euo pipefail
build_dir=$1 work=$2 kvd=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/kv/client.h"
cmake -S "$work/prefix/share/kvclient/examples" -B "$work/example-build" \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/example-build" -j"$(nproc)" >/dev/null
port=$(( 20000 + RANDOM % 12000 ))
"$kvd" --node-id=1 --data-dir="$work/data" --listen="127.0.0.1:$port" 2>"$work/kvd.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
LD_LIBRARY_PATH="$work/prefix/lib" "$work/example-build/hello_kv" "127.0.0.1:$port"
# The installed kvctl starts without any loader path set: it finds its library by RPATH.
env -u LD_LIBRARY_PATH "$work/prefix/bin/kvctl" --endpoints="127.0.0.1:$port" put installed yes
test "$(env -u LD_LIBRARY_PATH "$work/prefix/bin/kvctl" --endpoints="127.0.0.1:$port" get installed)" = yes
