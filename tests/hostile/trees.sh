#!/usr/bin/env bash
# Hostile Trees with --remote_download_outputs=all (issue 11, defects 10 and
# 5): a Tree that is refused (a DAG bomb, a '..' name) is reported as a
# failed output naming the tree and why and makes the exit code 1, never
# dropped silently; nothing is written for it.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
: "${TF_DRIVER:?}"
python3 - "$tf_tmp" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
tmp = sys.argv[1]
cache, actions = driver_dirs(tmp)
disk_put(cache, "cas", b"x")
bomb = dag_bomb(40)
dotdot = tree(directory(files=[("..", sha(b"x"), 1)]))
kb, kd = disk_put(cache, "cas", bomb), disk_put(cache, "cas", dotdot)
ar = action_result(dirs=[(f"bazel-out/k8-fastbuild/bin/pkg/bomb{i}", kb, len(bomb)) for i in range(100)] +
                   [("bazel-out/k8-fastbuild/bin/pkg/dotdot", kd, len(dotdot))])
open(os.path.join(actions, "1" * 64), "wb").write(ar)
PY
set +e
out=$(timeout 60 "$TF_DRIVER" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o" --mode=all --actions="$tf_tmp/actions" 2>&1)
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "exit $rc, want 1: $out"
assert_contains "$out" "corrupt: bazel-out/k8-fastbuild/bin/pkg/bomb0 action=1111111111111111111111111111111111111111111111111111111111111111"
assert_contains "$out" "more than 1000000 entries (a directory named N times counts N times)"
assert_contains "$out" "corrupt: bazel-out/k8-fastbuild/bin/pkg/dotdot"
assert_contains "$out" "file name '..' in 'bazel-out/k8-fastbuild/bin/pkg/dotdot' is not a plain file name"
[ "$(grep -c '^corrupt: ' <<<"$out")" -eq 101 ] || fail "not every refused tree was reported: $out"
[ -z "$(find "$tf_tmp/o" -type f -not -name '*.db*' 2>/dev/null)" ] || fail "files written: $(find "$tf_tmp/o" -type f)"
echo "trees: ok"
