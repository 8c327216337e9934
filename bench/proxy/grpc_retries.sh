#!/usr/bin/env bash
# How many reads a gRPC server serves per file: `topfetch fetch` over
# grpc:// of N blobs of MB megabytes and N of 16 bytes, at
# --remote_max_connections=8 (later transfers start while earlier ones
# stream, as the proxy's fetches do when targets complete one by one) and at
# the default 100 (all start at once). The server (SERVER): `worker`, Bazel's
# own remote worker (tests/lib/reapi_worker.sh, which logs each
# ByteStream.Read), or `proxy`, the gRPC front end of `topfetch proxy` over a
# loopback nginx (each read it forwards is a GET in nginx's log). Reads above
# the file count are retries. One table.
# Usage: bench/proxy/grpc_retries.sh [build-dir]   env: N=20 MB=20 CONNS="8 100" SERVER=worker
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build}
export TOPFETCH=$build/cli/topfetch TF_SOURCE_ROOT=$here TF_BUILD_ROOT=$build
[ -x "$TOPFETCH" ] || { echo "build first: scripts/build.sh" >&2; exit 2; }
. "$here/tests/lib/harness.sh"
. "$here/tests/lib/reapi_worker.sh"
N=${N:-20} MB=${MB:-20} CONNS=${CONNS:-8 100} SERVER=${SERVER:-worker}
# put < bytes: into the server's storage; prints the hash.
case "$SERVER" in
  worker)
    reapi_worker_start
    url=$WORKER_URL
    put() { reapi_cas_put_stdin; }
    log() { echo "$WORKER_LOG"; }
    # reads after line $1: "count bytes"
    reads() {
      tail -n +"$(($1 + 1))" "$WORKER_LOG" | awk '$2 == "ByteStream.Read" && match($3, /blobs\/[0-9a-f]+\/[0-9]+/) {
        n++; s = substr($3, RSTART, RLENGTH); sub(/.*\//, "", s); b += s } END {printf "%d %d\n", n, b}'
    }
    ;;
  proxy)
    nginx_start
    put() { cas_put_stdin; }
    log() { nginx_sync; echo "$NGINX_LOG"; }
    reads() { tail -n +"$(($1 + 1))" "$NGINX_LOG" | awk '$1 == "GET" && $2 ~ /\/cas\// {n++; b += $4} END {printf "%d %d\n", n, b}'; }
    ;;
  *) fail "SERVER=$SERVER: say worker or proxy" ;;
esac
: >"$tf_tmp/manifest"
for i in $(seq 0 $((N - 1))); do
  h=$( (yes "blob $i line" || true) | head -c $((MB * 1000000)) | put)
  echo "$h $((MB * 1000000)) big$i.dat" >>"$tf_tmp/manifest"
  h=$(printf 'intermediate %02d\n' "$i" | put)
  echo "$h 16 mid$i.txt" >>"$tf_tmp/manifest"
done
if [ "$SERVER" = proxy ]; then
  "$TOPFETCH" proxy --listen=grpc://127.0.0.1:0 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/proxy-out" \
    >"$tf_tmp/proxy.log" 2>&1 &
  tf_track $!
  wait_line "$tf_tmp/proxy.log" 'listening on grpc://'
  url="grpc://127.0.0.1:$(sed -n 's|^topfetch proxy: listening on grpc://[^ ,]*:\([0-9]*\),.*|\1|p' "$tf_tmp/proxy.log")"
fi
printf 'server: %s\n| --remote_max_connections | files | reads at the server | MiB the reads carried | s | fetch exit |\n|---|---|---|---|---|---|\n' "$SERVER"
for c in $CONNS; do
  l0=$(wc -l <"$(log)")
  t0=$(date +%s.%N)
  rc=0
  "$TOPFETCH" fetch --remote_cache="$url" --output_dir="$tf_tmp/out$c.$RANDOM" --manifest="$tf_tmp/manifest" \
    --remote_max_connections="$c" >"$tf_tmp/fetch$c.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  log >/dev/null
  read -r n bytes < <(reads "$l0")
  printf '| %s | %d | %d | %.1f | %.2f | %d |\n' "$c" "$((2 * N))" "$n" "$(python3 -c "print($bytes / 1048576)")" \
    "$(python3 -c "print($t1 - $t0)")" "$rc"
done
