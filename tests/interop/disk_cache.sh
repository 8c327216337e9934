#!/usr/bin/env bash
# Real Bazel 4.2.3 fills a --disk_cache; topfetch reads it as its disk
# backend. Checks the layout Bazel writes ({ac,cas}/<2 hex>/<sha256>) and that
# every output of every action comes back byte for byte, with its mode.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need bazel
fx="${TF_FIXTURES:?}"
ws="$tf_tmp/ws"
cp -r "$fx/workspace" "$ws"
chmod -R u+w "$ws"
root="$tf_tmp/obase"
dc="$tf_tmp/disk-cache"
bazel_run() {
  (cd "$ws" && env -i HOME="$tf_tmp/home" PATH=/usr/bin:/bin LANG=C.UTF-8 \
    bazel --output_user_root="$root" "$@")
}
# The Bazel server (a JVM that outlives the client): `bazel shutdown`, then
# by its pid (tf_cleanup) whatever is left.
stop_bazel() {
  local pid
  pid=$(cat "$root"/*/server/server.pid.txt 2>/dev/null || true)
  bazel_run shutdown >/dev/null 2>&1 || true
  # Still a Bazel server (not a reused pid)? Then tf_cleanup ends it.
  [ -n "$pid" ] && grep -qa bazel "/proc/$pid/cmdline" 2>/dev/null && tf_track "$pid"
  true
}
trap 'stop_bazel; tf_cleanup' EXIT
mkdir -p "$tf_tmp/home"
bazel_run build --color=no --curses=no --disk_cache="$dc" \
  //pkg:combined //pkg:multi //pkg:exe //pkg:big //pkg:treeart >"$tf_tmp/bazel.log" 2>&1 \
  || { cat "$tf_tmp/bazel.log"; fail "bazel build failed"; }

# The layout: sharded by the first two hex digits, nothing at the top level.
n_ac=$(find "$dc/ac" -mindepth 2 -maxdepth 2 -type f | wc -l)
[ "$n_ac" -ge 7 ] || fail "expected the ActionResults under ac/<2 hex>/, found $n_ac"
for f in $(find "$dc/ac" "$dc/cas" -mindepth 2 -maxdepth 2 -type f); do
  h=$(basename "$f"); d=$(basename "$(dirname "$f")")
  [ "$d" = "${h:0:2}" ] || fail "$f is not under its first two hex digits"
done
[ -z "$(find "$dc/ac" "$dc/cas" -mindepth 1 -maxdepth 1 -type f)" ] || fail "unsharded entries in the disk cache"
for f in $(find "$dc/cas" -mindepth 2 -type f); do
  [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] || fail "cas entry $f is not named by its hash"
done

# topfetch reads every output of every action back from it (mode all).
out="$tf_tmp/out"
"$TF_DRIVER" --remote_cache="$dc" --output_dir="$out" --mode=all --actions="$dc/ac" >"$tf_tmp/drv.log" 2>&1 \
  || { cat "$tf_tmp/drv.log"; fail "reading the disk cache failed"; }
cat "$tf_tmp/drv.log"
assert_contains "$(cat "$tf_tmp/drv.log")" "lost=0 failed=0"
# Where Bazel put its outputs: ask it (the output base also holds sandbox
# execroots that look alike).
bin=$(bazel_run info --color=no bazel-bin 2>/dev/null)
[ -d "$bin" ] || fail "cannot find Bazel's bazel-bin (bazel info said '$bin')"
for p in pkg/combined.txt pkg/intermediate.txt pkg/intermediate2.txt pkg/multi/one.txt pkg/multi/two.txt \
         pkg/multi/three.bin pkg/hello.sh pkg/big.dat pkg/treeart_dir/a.txt pkg/treeart_dir/sub/b.txt \
         pkg/treeart_dir/copy_of_input.txt pkg/treeart_dir/sub/empty.txt; do
  ours="$out/bazel-out/k8-fastbuild/bin/$p"
  [ -f "$ours" ] || fail "$p was not read from the disk cache"
  if ! cmp -s "$ours" "$bin/$p"; then
    ls -la "$ours" "$bin/$p" >&2
    sha256sum "$ours" "$bin/$p" >&2
    head -c 300 "$ours" | od -c | head -5 >&2
    head -c 300 "$bin/$p" | od -c | head -5 >&2
    fail "$p differs from Bazel's"
  fi
done
# Bazel makes everything in its output tree 0555; the ActionResult's
# is_executable is what counts: hello.sh is, two.txt is not.
[ -x "$out/bazel-out/k8-fastbuild/bin/pkg/hello.sh" ] || fail "hello.sh is not executable"
[ ! -x "$out/bazel-out/k8-fastbuild/bin/pkg/multi/two.txt" ] || fail "two.txt is executable"
echo "disk_cache: ok"
