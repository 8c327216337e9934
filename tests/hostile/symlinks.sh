#!/usr/bin/env bash
# Symlink outputs (issue 11, defect 10): one that points outside the output
# tree (/etc/passwd, ../../..) fails its target naming it, never posted
# successful with nothing on disk; one that stays inside is made.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
: "${TF_DRIVER:?}"
python3 - "$tf_tmp" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
tmp = sys.argv[1]
cache, actions = driver_dirs(tmp)
h = disk_put(cache, "cas", b"hello\n")
b = "bazel-out/k8-fastbuild/bin/pkg/"
ar = action_result(files=[(b + "a.txt", h, 6, False)],
                   file_symlinks=[(b + "passwd", "/etc/passwd"), (b + "up", "../../../../../etc/passwd"),
                                  (b + "ok", "a.txt")])
open(os.path.join(actions, "2" * 64), "wb").write(ar)
f = lambda n: bep_file("pkg/" + n)
open(os.path.join(tmp, "bep.bin"), "wb").write(bep_build(
    [("0", [f("passwd")], []), ("1", [f("up")], []), ("2", [f("ok"), f("a.txt")], [])],
    [("//pkg:passwd", ["0"]), ("//pkg:up", ["1"]), ("//pkg:ok", ["2"])]))
PY
set +e
out=$(timeout 60 "$TF_DRIVER" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o" --mode=toplevel \
  --actions="$tf_tmp/actions" --bep="$tf_tmp/bep.bin" --json_out="$tf_tmp/out.json" 2>&1)
rc=$?
set -e
[ "$rc" -ne 2 ] || fail "driver setup: $out"
python3 - "$tf_tmp/out.json" <<'PY'
import json, sys
done, why = {}, {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    if "completed" in e:
        label = e["id"]["targetCompleted"]["label"]
        done[label] = e["completed"].get("success", False)
        why[label] = e["completed"].get("failureDetail", {}).get("message", "")
want = {"//pkg:passwd": False, "//pkg:up": False, "//pkg:ok": True}
if done != want:
    sys.exit(f"targets posted {done}, want {want}")
for label, target in (("//pkg:passwd", "/etc/passwd"), ("//pkg:up", "../../../../../etc/passwd")):
    name = label.split(":")[1]
    msg = f"the output symlink bazel-out/k8-fastbuild/bin/pkg/{name} points to {target}, outside the output folder"
    if msg not in why[label]:
        sys.exit(f"{label}: the failure detail is {why[label]!r}, want it to contain {msg!r}")
PY
[ ! -e "$tf_tmp/o/bazel-out/k8-fastbuild/bin/pkg/passwd" ] && [ ! -L "$tf_tmp/o/bazel-out/k8-fastbuild/bin/pkg/passwd" ] || fail "the /etc/passwd link was made"
[ ! -L "$tf_tmp/o/bazel-out/k8-fastbuild/bin/pkg/up" ] || fail "the ../ link was made"
[ "$(readlink "$tf_tmp/o/bazel-out/k8-fastbuild/bin/pkg/ok")" = a.txt ] || fail "the in-tree link was not made"
[ "$(cat "$tf_tmp/o/bazel-out/k8-fastbuild/bin/pkg/ok")" = hello ] || fail "the in-tree link does not reach a.txt"
[ -z "$(find "$tf_tmp/o" -name '.tftmp*')" ] || fail "temporary links left"
echo "symlinks: ok"
