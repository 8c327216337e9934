#!/usr/bin/env bash
# A blob the cache lost (deleted from nginx's root after its ActionResult was
# written): the reply names the lost output with the action that produced it
# (to run again with the cache bypassed) — in the next reply while the build
# runs (Status) and in the reply to BuildFinished; the target's
# TargetComplete says success: false naming the file and the action; the
# other targets are unaffected; the client exits 1; the service goes on, and
# once the blob is back a new build succeeds.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/serve/lib.sh"
fx="${TF_FIXTURES:?}"
[ -f "$fx/cache.tar.gz" ] || fail "fixtures missing at $fx"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bin=bazel-out/k8-fastbuild/bin/pkg
out="$tf_tmp/out"
listen="ipc://$tf_tmp/sock/serve.sock"
big=01ab038e04910e5e862d69473ac6c00048530e261c0d77bec7393e5138735dfe
big_action=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb
mv "$NGINX_CACHE/cas/$big" "$tf_tmp/big.blob"

serve_start "$tf_tmp/serve.log" --listen="$listen" --remote_cache="$NGINX_URL" --output_dir="$out" \
  --build_event_json_file="$tf_tmp/bep.json" --remote_retries=1

# ---- through the example client --------------------------------------------------
client --connect="$listen" --actions="$NGINX_CACHE/ac" --exit_code=1 \
  --target="//pkg:multi=$bin/multi/one.txt,$bin/multi/two.txt,$bin/multi/three.bin" \
  --target="//pkg:big=$bin/big.dat"
[ "$rc" -eq 1 ] || fail "client exit $rc with a lost output (want 1)"
assert_contains "$client" "lost: $bin/big.dat ($big/5063895): run action $big_action again of //pkg:big: " "client output"
assert_contains "$client" "404" "client output"
assert_contains "$client" "2 targets complete (1 failed)" "client output"
[ -f "$out/$bin/multi/three.bin" ] || fail "the other target's files are missing"
[ ! -e "$out/$bin/big.dat" ] || fail "big.dat exists although its blob is lost"
ls -A "$out/$bin" | grep -q '^\.tftmp' && fail "temporary files left behind"
python3 - "$tf_tmp/bep.json" "$big_action" <<'PY' || fail "BEP check failed"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
done = {e["id"]["targetCompleted"]["label"]: e["completed"] for e in events if "completed" in e}
assert done["//pkg:multi"].get("success") is True, done["//pkg:multi"]
big = done["//pkg:big"]
assert not big.get("success"), big
msg = big["failureDetail"]["message"]
for want in ("bazel-out/k8-fastbuild/bin/pkg/big.dat", sys.argv[2], "lost"):
    assert want in msg, (want, msg)
fin = [e for e in events if "finished" in e][0]["finished"]
assert fin["exitCode"] == {"name": "BUILD_FAILURE", "code": 1}, fin
assert events[-1].get("lastMessage") is True
print("BEP ok")
PY
assert_contains "$(grep -A3 'build 1 ' "$tf_tmp/serve.log")" "(exit code 1)" "summary"
assert_contains "$(grep -A3 'build 1 ' "$tf_tmp/serve.log")" "topfetch: 1 of 2 targets complete" "summary"
assert_contains "$(grep -A3 'build 1 ' "$tf_tmp/serve.log")" "topfetch: 1 lost, 0 failed" "summary"

# ---- request by request: the loss comes with the next reply ------------------------
run_probe() { probe "$listen" "$@"; }
run_probe start
assert_contains "$probe" "ok build=2" "BuildStarted reply"
run_probe action "$big_action" "$NGINX_CACHE/ac/$big_action"
assert_contains "$probe" "ok build=2" "ActionExecuted reply"
run_probe target //pkg:big "$bin/big.dat"
assert_contains "$probe" "ok build=2" "TargetCompleted reply"
lost_reported() {
  run_probe status
  case "$probe" in *"lost: $bin/big.dat action=$big_action result=lost"*) return 0 ;; esac
  return 1
}
poll_until 30 lost_reported || fail "no reply reported the lost output: $probe"
run_probe status
case "$probe" in *"lost:"*) fail "a lost output was reported twice while building: $probe" ;; esac
run_probe finish 1
assert_contains "$probe" "ok build=2" "BuildFinished reply"
assert_contains "$probe" "lost: $bin/big.dat action=$big_action result=lost" "BuildFinished reply (every loss of the build)"
assert_contains "$probe" "stats: targets=1 targets_failed=1" "BuildFinished reply"

# ---- the blob is back: the action reported again, the build succeeds -------------------
mv "$tf_tmp/big.blob" "$NGINX_CACHE/cas/$big"
client --connect="$listen" --actions="$NGINX_CACHE/ac" --target="//pkg:big=$bin/big.dat"
[ "$rc" -eq 0 ] || fail "client exit $rc once the blob is back"
[ "$(sha256sum "$out/$bin/big.dat" | cut -d' ' -f1)" = "$big" ] || fail "big.dat wrong"
serve_stop TERM 0
echo "serve_lost: ok"
