#!/usr/bin/env bash
# One blob wanted by three targets at three paths: one GET at nginx, three
# verified files. ActionResults that try to leave the exec root, or carry a
# bad digest, or do not decode, are refused with a clear error and record
# nothing.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
nginx_start
h=$(head -c 200000 /dev/urandom | cas_put_stdin)
"$TF_MAKE_INPUTS" "$tf_tmp/in" "$h" 200000
out="$tf_tmp/out"
set +e
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$out" --store="$tf_tmp/store.db" \
  --actions="$tf_tmp/in/ac" --bep="$tf_tmp/in/bep.bin" --json_out="$tf_tmp/out.json" >"$tf_tmp/run.log" 2>&1
rc=$?
set -e
cat "$tf_tmp/run.log"
[ "$rc" -eq 0 ] || fail "driver exit $rc"
for p in s/a.out s/sub/b.out s/c.out; do
  [ "$(sha256sum "$out/bazel-out/k8-fastbuild/bin/$p" | cut -d' ' -f1)" = "$h" ] || fail "$p wrong or missing"
done
[ "$(nginx_count "GET /cas/$h")" -eq 1 ] || fail "the shared blob was fetched $(nginx_count "GET /cas/$h") times"
assert_contains "$(cat "$tf_tmp/run.log")" "targets=3 targets_failed=0"
[ "$(grep -c '"targetCompleted"' "$tf_tmp/out.json")" -ge 3 ] || fail "three TargetComplete events expected"

# Hostile ActionResults: each refused, naming the action and the problem.
set +e
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out2" --store="$tf_tmp/store2.db" \
  --actions="$tf_tmp/in/bad-ac" --report_store >"$tf_tmp/bad.log" 2>&1
rc=$?
set -e
log=$(cat "$tf_tmp/bad.log")
echo "$log"
[ "$rc" -eq 2 ] || fail "bad actions: exit $rc, want 2"
assert_contains "$log" "refusing the ActionResult of action 0000000000000000000000000000000000000000000000000000000000000007: output file 0: output file: path 'bazel-out/../../etc/passwd' has a '..' component"
assert_contains "$log" "action 0000000000000000000000000000000000000000000000000000000000000008: output file 0: output file: path '/etc/passwd' is absolute"
assert_contains "$log" "action 0000000000000000000000000000000000000000000000000000000000000009: output file 0: 'NOT-A-DIGEST' is not a SHA-256 digest"
assert_contains "$log" "the ActionResult of action 0000000000000000000000000000000000000000000000000000000000000010 (3 bytes) does not decode"
assert_contains "$log" "store: remote=0 fetching=0 local=0 lost=0"
assert_contains "$log" "actions=0 injected=0"
[ ! -e /etc/passwd.tftmp ] && [ -z "$(ls -A "$tf_tmp/out2" 2>/dev/null)" ] || fail "something was written"
echo "session_shared: ok"
