#!/usr/bin/env bash
# Bodies are streamed, never held whole: a 200 MB blob goes up and comes back
# through the proxy while its peak resident set (VmHWM) stays far below the
# blob size; a slow reader and a slow writer are paced by back-pressure, not
# by buffering; a client that leaves mid-download stops the upstream transfer.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
nginx_start
# Under AddressSanitizer, freed blocks wait in a quarantine (256 MB by default)
# and stay resident; keep it small here so that VmHWM shows what the proxy
# holds. (The other tests run with the full quarantine.)
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=4"
proxy_start proxy.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out"
P=$PROXY_URL
limit_kib=$((64 * 1024)) # 64 MiB: a third of the blob; the proxy needs ~15 MiB (more under ASan)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

big=200000000
h=$(blob "$tf_tmp/big" $big)
start=$(date +%s%N)
req PUT "$P/cas/$h" -T "$tf_tmp/big"
up_ms=$(ms "$start")
[ "$code" = 201 ] || fail "200 MB PUT: HTTP $code: $body"
cmp -s "$tf_tmp/big" "$NGINX_CACHE/cas/$h" || fail "nginx holds other bytes"
start=$(date +%s%N)
code=$(curl -sS -o "$tf_tmp/back" -w '%{http_code}' "$P/cas/$h")
down_ms=$(ms "$start")
[ "$code" = 200 ] || fail "200 MB GET: HTTP $code"
cmp -s "$tf_tmp/big" "$tf_tmp/back" || fail "200 MB GET returned other bytes"
rm -f "$tf_tmp/back"
peak=$(vmhwm)
echo "200 MB: up $((big / 1000 / (up_ms + 1))) MB/s, down $((big / 1000 / (down_ms + 1))) MB/s; proxy peak RSS $((peak / 1024)) MiB"
[ "$peak" -lt "$limit_kib" ] || fail "peak RSS $peak KiB while streaming 200 MB (limit $limit_kib KiB)"

# A slow reader: 20 MB at 8 MB/s. The proxy pauses the upstream transfer
# instead of buffering what the client has not taken yet.
mid=20000000
m=$(blob "$tf_tmp/mid" $mid)
cp "$tf_tmp/mid" "$NGINX_CACHE/cas/$m"
chmod a+r "$NGINX_CACHE/cas/$m"
code=$(curl -sS --limit-rate 8M -o "$tf_tmp/slow" -w '%{http_code}' "$P/cas/$m")
[ "$code" = 200 ] && cmp -s "$tf_tmp/mid" "$tf_tmp/slow" || fail "slow reader: HTTP $code or other bytes"
# A slow writer: 20 MB at 8 MB/s.
w=$(blob "$tf_tmp/w" $mid)
req PUT "$P/cas/$w" -T "$tf_tmp/w" --limit-rate 8M
[ "$code" = 201 ] && cmp -s "$tf_tmp/w" "$NGINX_CACHE/cas/$w" || fail "slow writer: HTTP $code"
peak=$(vmhwm)
[ "$peak" -lt "$limit_kib" ] || fail "peak RSS $peak KiB after the slow transfers"

# Eight 20 MB downloads at once, each verified.
pids=()
for i in $(seq 8); do
  curl -sS -o "$tf_tmp/par$i" "$P/cas/$m" 2>"$tf_tmp/par$i.err" &
  pids+=($!)
done
tf_track "${pids[@]}"
for p in "${pids[@]}"; do wait "$p" || fail "a parallel download failed: $(cat "$tf_tmp"/par*.err)"; done
for i in $(seq 8); do cmp -s "$tf_tmp/mid" "$tf_tmp/par$i" || fail "parallel download $i: other bytes"; done
rm -f "$tf_tmp"/par*

# A client that leaves early: the upstream transfer stops too (nginx sends
# far less than the blob), and the proxy keeps serving.
gets() { grep -c "GET /cas/$h " "$NGINX_LOG" || true; }
before=$(gets)
set +e
curl -sS --limit-rate 1M --max-time 1 -o /dev/null "$P/cas/$h" 2>/dev/null
set -e
# nginx logs the upstream request once it ends (cancelled, or sent in full).
more_gets() { [ "$(gets)" -gt "$before" ]; }
wait_for 30 "the upstream request for the abandoned download never ended" more_gets
sent=$(grep "GET /cas/$h " "$NGINX_LOG" | tail -1 | awk '{print $4}')
[ "$sent" -lt $((big / 2)) ] || fail "nginx sent $sent bytes to a client that left after 1 s"
req GET "$P/cas/$m"
[ "$code" = 200 ] && cmp -s "$tf_tmp/mid" "$tf_tmp/body" || fail "GET after an aborted client: HTTP $code"

proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "exit $proxy_rc"
echo "proxy_stream: ok"
