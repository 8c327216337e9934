#!/usr/bin/env bash
# Stopping the proxy (the cache is rate-limited to 2 MB/s so that transfers
# are in flight when the signal comes):
#  1. SIGTERM while a client downloads: no new connections are accepted, the
#     download in flight completes with the right bytes, then exit 0.
#  2. SIGTERM while the session fetches a 5 MB output: the fetch completes,
#     the file is in place, exit 0.
#  3. SIGTERM, then SIGINT while that fetch runs: abandoned at once, exit 8,
#     no partial or temporary file left.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
fx="${TF_FIXTURES:?}"
nginx_start 'limit_rate 2m;'
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
big=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb
bigdat=bazel-out/k8-fastbuild/bin/pkg/big.dat
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# 1.
h=$(blob "$tf_tmp/b" 4000000)
cp "$tf_tmp/b" "$NGINX_CACHE/cas/$h"
chmod a+r "$NGINX_CACHE/cas/$h"
proxy_start p1.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out1"
curl -sS -o "$tf_tmp/got" -w '%{http_code}' "$PROXY_URL/cas/$h" >"$tf_tmp/code" 2>"$tf_tmp/curl.err" &
cpid=$!
tf_track "$cpid"
wait_file "$tf_tmp/got" 60 # the download is under way
kill -TERM "$PROXY_PID"
wait_for 30 "the proxy still accepts connections after SIGTERM" proxy_refuses
set +e
curl -sS -o /dev/null --max-time 2 "$PROXY_URL/cas/$h" 2>/dev/null
late=$?
set -e
[ "$late" -eq 7 ] || fail "a new connection after SIGTERM: curl exit $late, want 7 (refused)"
wait "$cpid" || fail "the download in flight failed: $(cat "$tf_tmp/curl.err")"
[ "$(cat "$tf_tmp/code")" = 200 ] && cmp -s "$tf_tmp/b" "$tf_tmp/got" || fail "the download in flight: other bytes"
proxy_wait
[ "$proxy_rc" -eq 0 ] || fail "drain: exit $proxy_rc"

# 2.
proxy_start p2.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --remote_download_outputs=all
req GET "$PROXY_URL/ac/$big"
[ "$code" = 200 ] || fail "AC hit: HTTP $code"
fetching() { [ -n "$(find "$1" -name '.tftmp*' 2>/dev/null)" ]; }
wait_for 60 "no fetch of big.dat under way" fetching "$tf_tmp/out2"
[ ! -e "$tf_tmp/out2/$bigdat" ] || fail "big.dat arrived too fast for this test"
kill -TERM "$PROXY_PID"
proxy_wait
cat "$PROXY_LOG"
[ "$proxy_rc" -eq 0 ] || fail "SIGTERM during a fetch: exit $proxy_rc, want 0"
[ "$(sha256sum "$tf_tmp/out2/$bigdat" | cut -c1-8)" = 01ab038e ] || fail "the fetch in flight did not complete"
assert_contains "$(cat "$PROXY_LOG")" "1 of 1 file in place (1 fetched"

# 3.
proxy_start p3.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out3" --remote_download_outputs=all \
  --build_event_json_file="$tf_tmp/b3.json"
req GET "$PROXY_URL/ac/$big"
[ "$code" = 200 ] || fail "AC hit: HTTP $code"
wait_for 60 "no fetch of big.dat under way" fetching "$tf_tmp/out3"
kill -TERM "$PROXY_PID"
wait_for 30 "the proxy did not handle SIGTERM" proxy_refuses
start=$(date +%s%N)
kill -INT "$PROXY_PID"
proxy_wait
took=$(ms "$start")
cat "$PROXY_LOG"
[ "$proxy_rc" -eq 8 ] || fail "two signals: exit $proxy_rc, want 8"
[ "$took" -lt 3000 ] || fail "the second signal took $took ms to end the proxy"
assert_contains "$(cat "$PROXY_LOG")" "topfetch: INTERRUPTED: "
[ ! -e "$tf_tmp/out3/$bigdat" ] || fail "big.dat is in place although its fetch was abandoned"
[ -z "$(find "$tf_tmp/out3" -name '.tftmp*')" ] || fail "temporary files left: $(find "$tf_tmp/out3" -name '.tftmp*')"
echo "proxy_signals: ok"
