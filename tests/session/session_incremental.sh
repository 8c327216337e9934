#!/usr/bin/env bash
# Decide after execution, across builds, through the store:
#  build 1: only //pkg:combined is top-level; every action runs (is reported);
#           multi's outputs get metadata only.
#  build 2: //pkg:multi becomes top-level and NO action runs: its files come
#           from the metadata build 1 recorded.
#  build 3: one output deleted, one modified behind our back: both fetched
#           again, the untouched one not.
#  build 4: a blob gone from the cache: the target fails naming the file, the
#           digest and the producing action, which is marked lost.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
fx="${TF_FIXTURES:?}"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"
bin=bazel-out/k8-fastbuild/bin/pkg
out="$tf_tmp/out"
store="$tf_tmp/store.db"
bep="$fx/run2_minimal_hits/bep.bin"
drive() { # drive LOGNAME ARGS...
  local log=$1; shift
  set +e
  "$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$out" --store="$store" "$@" >"$tf_tmp/$log" 2>&1
  rc=$?
  set -e
  cat "$tf_tmp/$log"
}

drive b1.log --target=//pkg:combined --actions="$NGINX_CACHE/ac" --bep="$bep"
[ "$rc" -eq 0 ] || fail "build 1 exit $rc"
[ -f "$out/$bin/combined.txt" ] || fail "combined.txt missing"
[ ! -e "$out/$bin/multi" ] || fail "multi fetched in build 1 although not top-level"
[ ! -e "$out/$bin/intermediate.txt" ] || fail "an intermediate was fetched"
assert_contains "$(cat "$tf_tmp/b1.log")" "actions=8 injected=14 wanted=1 fetched=1"

before=$(nginx_count "GET /ac/")
drive b2.log --target=//pkg:multi --bep="$bep"
[ "$rc" -eq 0 ] || fail "build 2 exit $rc"
assert_contains "$(cat "$tf_tmp/b2.log")" "actions=0 injected=0 wanted=3 fetched=3"
for f in one.txt two.txt three.bin; do [ -f "$out/$bin/multi/$f" ] || fail "multi/$f not fetched from metadata"; done
[ "$(nginx_count "GET /ac/")" -eq "$before" ] || fail "build 2 read action results: an action ran again"

rm "$out/$bin/multi/one.txt"
echo "changed" >"$out/$bin/multi/two.txt"
g3=$(nginx_count "GET /cas/541b3e9d")
drive b3.log --target=//pkg:multi --bep="$bep"
[ "$rc" -eq 0 ] || fail "build 3 exit $rc"
assert_contains "$(cat "$tf_tmp/b3.log")" "wanted=3 fetched=2 present=1"
[ "$(sha256sum "$out/$bin/multi/one.txt" | cut -c1-8)" = c7d9472e ] || fail "deleted one.txt not fetched again"
[ "$(sha256sum "$out/$bin/multi/two.txt" | cut -c1-8)" = 27dd8ed4 ] || fail "modified two.txt not fetched again"
[ "$(nginx_count "GET /cas/541b3e9d")" -eq "$g3" ] || fail "three.bin fetched although unchanged"

# The cache loses big.dat's blob.
rm "$NGINX_CACHE"/cas/01ab038e*
drive b4.log --target=//pkg:big --bep="$bep" --bep_out="$tf_tmp/b4.bin" --json_out="$tf_tmp/b4.json" \
  --report_store --check_lost=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb
[ "$rc" -eq 1 ] || fail "build 4 exit $rc, want 1"
log=$(cat "$tf_tmp/b4.log")
assert_contains "$log" "lost: $bin/big.dat action=4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb"
assert_contains "$log" "HTTP 404"
assert_contains "$log" "targets=1 targets_failed=1"
[ ! -e "$out/$bin/big.dat" ] || fail "big.dat exists after it was lost"
python3 - "$tf_tmp/b4.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("id", {}).get("targetCompleted", {}).get("label") == "//pkg:big":
        c = e["completed"]
        assert not c.get("success"), "//pkg:big reported success"
        m = c["failureDetail"]["message"]
        for want in ("lost bazel-out/k8-fastbuild/bin/pkg/big.dat", "01ab038e", "5063895",
                     "produced by action 4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb"):
            assert want in m, (want, m)
        break
else:
    raise SystemExit("no TargetComplete for //pkg:big")
PY
# The store remembers the action as lost; the other targets still completed.
assert_contains "$log" "action 4eef905a5fc5c4a60bbe4f07d91acd9aeec07b30cd82f2fd232b142113ec2cfb lost: 1"
assert_contains "$log" "local_bad=0"
echo "session_incremental: ok"
