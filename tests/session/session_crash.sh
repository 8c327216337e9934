#!/usr/bin/env bash
# kill -9 in the middle of fetching: the next start removes the stale
# temporary file, fetches again what was pending, and nothing the store calls
# local is missing or wrong.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
fx="${TF_FIXTURES:?}"
# 1 MB/s while the file "slow" is in the cache root, full speed after.
nginx_start 'set $limit_rate 0; if (-f $document_root/slow) { set $limit_rate 1m; }'
touch "$NGINX_CACHE/slow"
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bin=bazel-out/k8-fastbuild/bin/pkg
out="$tf_tmp/out"
store="$tf_tmp/store.db"

# mode all: big.dat (5 MB at 1 MB/s) is being fetched when the kill comes.
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$out" --store="$store" --mode=all \
  --actions="$NGINX_CACHE/ac" >"$tf_tmp/run1.log" 2>&1 &
pid=$!
tf_track "$pid"
in_progress() { [ -n "$(find "$out" -name '.tftmp.*' -size +100k 2>/dev/null)" ]; }
wait_for 60 "no transfer in progress to interrupt" in_progress
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
[ ! -e "$out/$bin/big.dat" ] || fail "big.dat complete before the kill; the test did not interrupt anything"
stale=$(find "$out" -name '.tftmp.*' | wc -l)
[ "$stale" -ge 1 ] || fail "expected a stale temporary file"
# (The store itself is checked after the restart, which must open it cleanly.)

# Restart: nothing reported, only recovery (at full speed).
rm "$NGINX_CACHE/slow"
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$out" --store="$store" --report_store >"$tf_tmp/run2.log" 2>&1 \
  || fail "restart failed: $(cat "$tf_tmp/run2.log")"
cat "$tf_tmp/run2.log"
log=$(cat "$tf_tmp/run2.log")
assert_contains "$log" "lost=0 failed=0"
case "$log" in *"recovered=0"*) fail "nothing was recovered: $log" ;; esac
assert_contains "$log" "fetching=0 "
assert_contains "$log" "local_bad=0"
[ -z "$(find "$out" -name '.tftmp.*')" ] || fail "stale temporary files remain"
[ "$(sha256sum "$out/$bin/big.dat" | cut -c1-8)" = 01ab038e ] || fail "big.dat not completed after restart"
echo "session_crash: ok"
