#!/usr/bin/env bash
# `topfetch fetch` removes the temporary files a killed run left behind
# (issue 11, defect 7), and only those: a live process's stay.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
mkdir -p "$tf_tmp/cache/cas/${H:0:2}" "$tf_tmp/o/pkg/sub"
printf 'hello\n' >"$tf_tmp/cache/cas/${H:0:2}/$H"
printf '%s 6 pkg/a.txt\n' "$H" >"$tf_tmp/m.txt"

# A process that is gone (its pid is not reused while we look), and one alive.
sh -c 'exit 0' & dead=$!; wait $dead
sleep 300 & live=$!; tf_track $live
printf 'partial' >"$tf_tmp/o/pkg/.tftmp.$dead.1"
printf 'partial' >"$tf_tmp/o/pkg/sub/.tftmp.$dead.7"
printf 'writing' >"$tf_tmp/o/pkg/.tftmp.$live.1"
run_tf fetch --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 0 ] || fail "exit $rc: $out"
assert_contains "$out" "removed 2 temporary files a killed run left behind"
[ ! -e "$tf_tmp/o/pkg/.tftmp.$dead.1" ] && [ ! -e "$tf_tmp/o/pkg/sub/.tftmp.$dead.7" ] || fail "a dead run's temporary stayed"
[ "$(cat "$tf_tmp/o/pkg/.tftmp.$live.1")" = writing ] || fail "a live process's temporary was removed"
[ "$(cat "$tf_tmp/o/pkg/a.txt")" = hello ] || fail "pkg/a.txt"
run_tf fetch --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o" --manifest="$tf_tmp/m.txt"
[ "$rc" -eq 0 ] || fail "second run: exit $rc: $out"
case "$out" in *"temporary file"*) fail "second run removed something: $out" ;; esac
echo "stale: ok"
