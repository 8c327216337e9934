#!/usr/bin/env bash
# A NUL byte in an ActionResult's output path (issue 11, defect 8) would cut
# the path short ('pkg/a.txt\0zz' written as 'pkg/a.txt'): the ActionResult
# is refused naming the field, nothing is written, and through the proxy the
# lookup is still answered while the result is not recorded.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
: "${TF_DRIVER:?}"
A=1111111111111111111111111111111111111111111111111111111111111111
python3 - "$tf_tmp" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
tmp = sys.argv[1]
cache, actions = driver_dirs(tmp)
h = disk_put(cache, "cas", b"hello\n")
ar = action_result(files=[("bazel-out/k8-fastbuild/bin/pkg/a.txt\0zz", h, 6, False)])
open(os.path.join(actions, "1" * 64), "wb").write(ar)
disk_put(cache, "ac", ar, "1" * 64)
PY
want="the ActionResult of action $A (113 bytes) does not decode: ActionResult.output_files.path (field 1) is a string with a NUL byte in it at byte offset"
set +e
out=$("$TF_DRIVER" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o" --mode=all --actions="$tf_tmp/actions" 2>&1)
set -e
assert_contains "$out" "$want" "session"
assert_contains "$out" "stats: actions=0 injected=0 wanted=0 fetched=0" "session"
[ -z "$(find "$tf_tmp/o" -type f -not -name '*.db*' 2>/dev/null)" ] || fail "files written: $(find "$tf_tmp/o" -type f)"

proxy_start proxy.log --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/po" --remote_download_outputs=all
req GET "$PROXY_URL/ac/$A"
[ "$code" = 200 ] || fail "GET /ac/$A: HTTP $code: $body"
poll_until 30 grep -q "does not decode" "$PROXY_LOG" || fail "the proxy did not say why: $(cat "$PROXY_LOG")"
assert_contains "$(cat "$PROXY_LOG")" "topfetch proxy: not recorded: $want" "proxy"
proxy_stop
[ -z "$(find "$tf_tmp/po" -type f -not -name '*.db*' 2>/dev/null)" ] || fail "files written: $(find "$tf_tmp/po" -type f)"
echo "action_nul: ok"
