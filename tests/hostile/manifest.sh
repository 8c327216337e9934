#!/usr/bin/env bash
# The manifest of `topfetch fetch` (issue 11, defect 12): a line over the cap
# is refused without being held in memory (a 50 MB comment line cost 169 MB
# RSS); terminal escapes in it are printed escaped (defect 11).
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/hostile/lib.sh"
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
mkdir -p "$tf_tmp/cache/cas/${H:0:2}"
printf 'hello\n' >"$tf_tmp/cache/cas/${H:0:2}/$H"

# A 50 MB comment line, then a good line: skipped as a comment, in bounded memory.
{ printf '#'; head -c 50000000 /dev/zero | tr '\0' c; printf '\n%s 6 a.txt\n' "$H"; } >"$tf_tmp/long.txt"
run_tf_rss fetch --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/long.txt"
[ "$rc" -eq 0 ] || fail "long comment: exit $rc: $out"
# ASan builds carry their own overhead; the line itself must not be in memory.
[ "$rss" -lt 40000 ] || { sanitized && [ "$rss" -lt 120000 ]; } || fail "50 MB line held in memory: max RSS $rss KiB"
[ "$(cat "$tf_tmp/o1/a.txt")" = hello ] || fail "the good line was not fetched"

# A 50 MB data line: refused naming its line and length; nothing fetched.
{ printf '%s 6 ' "$H"; head -c 50000000 /dev/zero | tr '\0' p; printf '\n'; } >"$tf_tmp/longdata.txt"
run_tf fetch --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/longdata.txt"
[ "$rc" -eq 3 ] || fail "long line: exit $rc"
assert_contains "$out" "longdata.txt:1: line is 50000067 bytes long (limit 8192)"
assert_contains "$out" "the manifest is malformed; nothing was fetched"
[ -z "$(ls -A "$tf_tmp/o2" 2>/dev/null)" ] || fail "files written from a malformed manifest"

# Two digests for one path, and an escape sequence in a path.
printf '%s 6 a.txt\n%s 6 a.txt\n' "$H" "$(printf 'x' | sha256sum | cut -d' ' -f1)" >"$tf_tmp/two.txt"
run_tf fetch --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o3" --manifest="$tf_tmp/two.txt"
[ "$rc" -eq 3 ] || fail "two digests: exit $rc"
assert_contains "$out" "two.txt:1 and line 2 both write 'a.txt' with different contents or modes"
printf '%s 6 \033]0;owned\a\033[2Jb.txt\n%s 6 \033[2Jb.txt\n' "$H" "$(printf 'x' | sha256sum | cut -d' ' -f1)" >"$tf_tmp/esc.txt"
run_tf fetch --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/esc.txt"
[ "$rc" -eq 1 ] || fail "escapes: exit $rc: $out" # the second blob is not in the cache
assert_contains "$out" 'lost: \x1b[2Jb.txt'
case "$out" in *$'\033'*|*$'\a'*) fail "a raw control character reached the terminal: $(printf '%q' "$out")" ;; esac
echo "manifest: ok"
