#!/usr/bin/env bash
# How many reads the gRPC upstream serves per file: `topfetch fetch` of N
# blobs of MB megabytes and N of 16 bytes from Bazel's own remote worker
# (tests/lib/reapi_worker.sh, which logs each ByteStream.Read), at
# --remote_max_connections=8 (later transfers start while earlier ones
# stream, as the proxy's fetches do when targets complete one by one) and at
# the default 100 (all start at once). Reads above the file count are
# retries: with TOPFETCH_TRACE=1 a build that logs retries shows why. One table.
# Usage: bench/proxy/grpc_retries.sh [build-dir]   env: N=20 MB=20 CONNS="8 100"
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here TF_BUILD_ROOT=$build
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
. "$here/tests/lib/harness.sh"
. "$here/tests/lib/reapi_worker.sh"
N=${N:-20} MB=${MB:-20} CONNS=${CONNS:-8 100}
reapi_worker_start
: >"$tf_tmp/manifest"
for i in $(seq 0 $((N - 1))); do
  h=$( (yes "blob $i line" || true) | head -c $((MB * 1000000)) | reapi_cas_put_stdin)
  echo "$h $((MB * 1000000)) big$i.dat" >>"$tf_tmp/manifest"
  h=$(printf 'intermediate %02d\n' "$i" | reapi_cas_put_stdin)
  echo "$h 16 mid$i.txt" >>"$tf_tmp/manifest"
done
printf '| --remote_max_connections | files | reads at the worker | MiB the reads named | s | fetch exit |\n|---|---|---|---|---|---|\n'
for c in $CONNS; do
  l0=$(wc -l <"$WORKER_LOG")
  t0=$(date +%s.%N)
  rc=0
  "$TOPFETCH" fetch --remote_cache="$WORKER_URL" --output_dir="$tf_tmp/out$c" --manifest="$tf_tmp/manifest" \
    --remote_max_connections="$c" >"$tf_tmp/fetch$c.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  read -r reads bytes < <(tail -n +"$((l0 + 1))" "$WORKER_LOG" | awk '$2 == "ByteStream.Read" && match($3, /blobs\/[0-9a-f]+\/[0-9]+/) {
      n++; s = substr($3, RSTART, RLENGTH); sub(/.*\//, "", s); b += s } END {printf "%d %d\n", n, b}')
  printf '| %s | %d | %d | %.1f | %.2f | %d |\n' "$c" "$((2 * N))" "$reads" "$(python3 -c "print($bytes / 1048576)")" \
    "$(python3 -c "print($t1 - $t0)")" "$rc"
done
