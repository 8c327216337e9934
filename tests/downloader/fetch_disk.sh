#!/usr/bin/env bash
# The disk backend: Bazel's --disk_cache layout ({ac,cas}/ab/abcd...), and a
# flat cache root; lost blobs and corrupt blobs typed as for HTTP.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
cache="$tf_tmp/disk"
mkdir -p "$cache/cas"
put() { # put FILE [flat]
  local h; h=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "${2:-}" = flat ]; then cp "$1" "$cache/cas/$h"; else mkdir -p "$cache/cas/${h:0:2}"; cp "$1" "$cache/cas/${h:0:2}/$h"; fi
  echo "$h"
}
: >"$tf_tmp/m"
for i in $(seq 1 50); do
  head -c $((i * 101)) /dev/urandom >"$tf_tmp/b$i"
  h=$(put "$tf_tmp/b$i" $([ $((i % 5)) -eq 0 ] && echo flat))
  echo "$h $((i * 101)) $([ $((i % 3)) -eq 0 ] && echo 'x ')d$((i % 4))/f$i" >>"$tf_tmp/m"
done
run_tf fetch --remote_cache="$cache" --output_dir="$tf_tmp/out" --manifest="$tf_tmp/m"
[ "$rc" -eq 0 ] || fail "disk round trip: exit $rc: $out"
assert_contains "$out" "50 of 50 files in place (50 fetched"
for i in $(seq 1 50); do
  p=$(find "$tf_tmp/out" -name "f$i")
  cmp -s "$p" "$tf_tmp/b$i" || fail "f$i differs"
  want=644; [ $((i % 3)) -eq 0 ] && want=755
  [ "$(stat -c %a "$p")" = "$want" ] || fail "f$i mode"
done
# file:// URL form works too.
run_tf fetch --remote_cache="file://$cache" --output_dir="$tf_tmp/out2" --manifest="$tf_tmp/m"
[ "$rc" -eq 0 ] || fail "file:// form: exit $rc: $out"

# Lost and corrupt in a disk cache.
missing=$(echo nothing-here | sha256sum | cut -d' ' -f1)
head -c 300 /dev/urandom >"$tf_tmp/c"
ch=$(put "$tf_tmp/c")
head -c 300 /dev/urandom >"$cache/cas/${ch:0:2}/$ch"
printf '%s 13 lost.txt\n%s 300 corrupt.bin\n' "$missing" "$ch" >"$tf_tmp/m2"
run_tf fetch --remote_cache="$cache" --output_dir="$tf_tmp/out3" --manifest="$tf_tmp/m2"
[ "$rc" -eq 1 ] || fail "disk errors: exit $rc"
assert_contains "$out" "lost: lost.txt"
assert_contains "$out" "not in the disk cache"
assert_contains "$out" "corrupt: corrupt.bin"
[ ! -e "$tf_tmp/out3/lost.txt" ] && [ ! -e "$tf_tmp/out3/corrupt.bin" ] || fail "files after failure"

# A cache that is neither a URL nor a folder: exit 2 with what to do.
run_tf fetch --remote_cache="$tf_tmp/nope" --output_dir="$tf_tmp/o" --manifest="$tf_tmp/m"
[ "$rc" -eq 2 ] || fail "bad cache: exit $rc"
assert_contains "$out" "not an http(s) URL and not an existing directory"
run_tf fetch --remote_cache="ftp://127.0.0.1:1" --output_dir="$tf_tmp/o" --manifest="$tf_tmp/m"
[ "$rc" -eq 2 ] || fail "ftp: exit $rc"
assert_contains "$out" "unknown scheme"
echo "fetch_disk: ok"
