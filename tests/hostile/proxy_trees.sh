#!/usr/bin/env bash
# Tree DAG bombs through the proxy (issue 11, defect 5): ActionResults that
# Bazel would fetch (GET /ac/) naming small Trees that expand to millions of
# paths, as 100 output directories each. The proxy answers at once, its
# session refuses every such directory with a clear error line (the Tree's
# digest shown, never an empty '(/0)'), spends little CPU on them, refuses
# what would take one ActionResult past its work budget, and keeps serving.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
A1=1111111111111111111111111111111111111111111111111111111111111111
A2=2222222222222222222222222222222222222222222222222222222222222222
A3=3333333333333333333333333333333333333333333333333333333333333333
bin=bazel-out/k8-fastbuild/bin/pkg
python3 - "$tf_tmp" >"$tf_tmp/trees.txt" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
tmp = sys.argv[1]
cache, _ = driver_dirs(tmp)
bin = "bazel-out/k8-fastbuild/bin/pkg"
x = disk_put(cache, "cas", b"x")

def empty_dag(levels):  # directories only: 2^levels - 2 directory paths
    d = directory()
    children = [d]
    for _ in range(levels - 1):
        d = directory(dirs=[("a", sha(d), len(d)), ("b", sha(d), len(d))])
        children.append(d)
    root = children.pop()
    return tree(root, children)

bomb, empty, mid = dag_bomb(40), empty_dag(22), empty_dag(19)
kb, ke, km = (disk_put(cache, "cas", t) for t in (bomb, empty, mid))
# 2^40 file paths: one named tree_wide and 99 more
disk_put(cache, "ac", action_result(dirs=[(f"{bin}/tree_wide", kb, len(bomb))] +
                                    [(f"{bin}/bomb{i}", kb, len(bomb)) for i in range(99)]), "1" * 64)
# 2^22 empty directories, 100 times
disk_put(cache, "ac", action_result(dirs=[(f"{bin}/empty{i}", ke, len(empty)) for i in range(100)]), "2" * 64)
# 524,286 directories each: the first naming fits the budget of 1,000,000, the next two do not
disk_put(cache, "ac", action_result(dirs=[(f"{bin}/mid{i}", km, len(mid)) for i in range(3)]), "3" * 64)
print(x, kb, len(bomb), ke, len(empty), km, len(mid))
PY
read -r X KB LB KE LE KM LM <"$tf_tmp/trees.txt"

cpu() { awk '{ print $14 + $15 }' "/proc/$PROXY_PID/stat"; }
hz=$(getconf CLK_TCK)
lines() { grep -c "^topfetch: corrupt: $bin/" "$PROXY_LOG" || true; }
# One proxy per ActionResult (the CLI prints its first 100 error lines, then
# only counts them). Sets log and ticks (CPU the proxy used).
lookup() { # ACTION_KEY REFUSED_NAMINGS
  proxy_start "proxy-$1.log" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o"
  req GET "$PROXY_URL/ac/$1" --max-time 30
  [ "$code" = 200 ] || fail "GET /ac/$1: HTTP $code: $body"
  poll_until 60 eval '[ "$(lines)" -ge '"$2"' ]' || fail "$(lines) of $2 refused output directories reported: $(cat "$PROXY_LOG")"
  ticks=$(cpu)
  log=$(cat "$PROXY_LOG")
  # Little CPU for all of it (generous: under a sanitizer and load).
  [ "$ticks" -lt $((10 * hz)) ] || fail "the proxy spent $((ticks / hz)) s of CPU on the Trees of $1"
  echo "action $1: $2 namings refused, $((ticks * 1000 / hz)) ms of CPU"
  ! grep -q '(/0)' <<<"$log" || fail "an empty digest printed: $(grep '(/0)' <<<"$log")"
}

# Every naming of the 2^40 bomb: the digest of the Tree, the reason.
lookup $A1 100
assert_contains "$log" "topfetch: corrupt: $bin/tree_wide ($KB/$LB), produced by action $A1: tree $KB: more than 1000000 entries (a directory named N times counts N times); the output directory is refused"
[ "$(grep -c "^topfetch: corrupt: $bin/bomb[0-9]* ($KB/$LB), produced by action $A1: tree $KB: more than 1000000 entries" <<<"$log")" -eq 99 ] ||
  fail "not every naming of the bomb was refused: $log"
proxy_stop
# Every naming of the 2^22 empty directories (only files counted before: 18 s of CPU).
lookup $A2 100
[ "$(grep -c "^topfetch: corrupt: $bin/empty[0-9]* ($KE/$LE), produced by action $A2: tree $KE: more than 1000000 entries" <<<"$log")" -eq 100 ] ||
  fail "not every naming of the empty-directory bomb was refused: $log"
proxy_stop
# The budget: mid0 fits, mid1 and mid2 would take the ActionResult past it.
lookup $A3 2
assert_contains "$log" "topfetch: corrupt: $bin/mid1 ($KM/$LM), produced by action $A3: tree $KM: its entries would take the ActionResult of action $A3 past its work budget of 475714 tree entries (all its output directories together, each path counted); the output directory is refused"
assert_contains "$log" "topfetch: corrupt: $bin/mid2 ($KM/$LM)"
! grep -q "$bin/mid0" <<<"$log" || fail "mid0 fits the budget: $(grep "$bin/mid0" <<<"$log")"

# Still serving.
req GET "$PROXY_URL/cas/$X" --max-time 30
[ "$code" = 200 ] && [ "$body" = x ] || fail "after the bombs: HTTP $code: $body"
[ -z "$(find "$tf_tmp/o" -type f -path '*pkg*' 2>/dev/null)" ] || fail "files written: $(find "$tf_tmp/o" -type f)"
proxy_stop
echo "proxy_trees: ok"
