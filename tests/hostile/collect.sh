#!/usr/bin/env bash
# Hostile BEP streams into `topfetch collect` (issue 11): a path with two
# digests in one build (defect 1), failed targets (defect 2), NUL bytes in
# File.name (defect 8), terminal escapes in names (defect 11). Each: the
# error text, the exit code, and the files and folder left intact. The
# cache is a --disk_cache folder: no server needed.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/hostile/lib.sh"
gen() { python3 - "$tf_tmp" "$@" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
tmp, what = sys.argv[1], sys.argv[2]
H, G = sha(b"hello\n"), sha(b"other\n")
cache = os.path.join(tmp, "cache")
disk_put(cache, "cas", b"hello\n"); disk_put(cache, "cas", b"other\n")
os.makedirs(os.path.join(cache, "ac"), exist_ok=True)
streams = {
  "conflict": ([("0", [bep_file("a.txt", H, 6)], []), ("1", [bep_file("a.txt", G, 6)], [])],
               [("//p:a", ["0"]), ("//p:b", ["1"])]),
  "conflict-one-set": ([("0", [bep_file("a.txt", H, 6), bep_file("a.txt", G, 6)], [])], [("//p:a", ["0"])]),
  "cycle": ([("0", [bep_file("a.txt", H, 6)], ["1"]), ("1", [], ["0"])], [("//p:a", ["0"])]),
  "undefined": ([("0", [bep_file("a.txt", H, 6)], ["9"])], [("//p:a", ["0"])]),
  "deep": ([(str(i), [], [str(i + 1)]) for i in range(10050)] + [("10050", [bep_file("a.txt", H, 6)], [])],
           [("//p:a", ["0"])]),
  "nul": ([("0", [bep_file("a.txt\0zz", H, 6)], [])], [("//p:a", ["0"])]),
  "escape": ([("0", [bep_file("a.txt", H, 6)], ["\x1b]0;owned\x07"])], [("//p:\x1b[2J", ["0"])]),
  "huge-length": ([("0", [bep_file("a.txt", H, 2**63 - 1)], [])], [("//p:a", ["0"])]),
}
sets, targets = streams[what]
open(os.path.join(tmp, what + ".bep"), "wb").write(bep_build(sets, targets))
PY
}
no_temporaries() { # DIR
  local left; left=$(find "$1" -name '.tftmp*' 2>/dev/null)
  [ -z "$left" ] || fail "temporary files left behind: $left"
}
H=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
G=$(printf 'other\n' | sha256sum | cut -d' ' -f1)

# 1. Two targets name one exec path with two digests: a conflict, neither
#    target successful, the path and both digests named, exit 1, the file
#    in place is one whole blob (never overwritten by the other).
for case in conflict conflict-one-set; do
  gen $case
  run_tf collect --bep="$tf_tmp/$case.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-$case" \
    --build_event_json_file="$tf_tmp/$case.json"
  [ "$rc" -eq 1 ] || fail "$case: exit $rc, want 1: $out"
  assert_contains "$out" "bazel-out/k8-fastbuild/bin/a.txt is named with two different contents in this build: $H/6 and $G/6" "$case"
  assert_contains "$out" "1 conflicting" "$case"
  assert_contains "$out" "topfetch collect: target //p:a failed:" "$case"
  ! grep -q '"success":true' "$tf_tmp/$case.json" || fail "$case: a target was posted successful: $(cat "$tf_tmp/$case.json")"
  [ "$(grep -c '"completed"' "$tf_tmp/$case.json")" -ge 1 ] || fail "$case: no TargetComplete in the output BEP"
  if [ -e "$tf_tmp/o-$case/a.txt" ]; then
    [ "$(cat "$tf_tmp/o-$case/a.txt")" = hello ] || fail "$case: a.txt holds '$(cat "$tf_tmp/o-$case/a.txt")', not the first blob"
  fi
  no_temporaries "$tf_tmp/o-$case"
done
assert_contains "$out" "topfetch collect: 1 target failed (see above)"
grep -q '"success":false\|"failureDetail"' "$tf_tmp/conflict.json" || true
run_tf collect --bep="$tf_tmp/conflict.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-conflict"
assert_contains "$out" "topfetch collect: target //p:b failed:" "conflict, second target"
assert_contains "$out" "2 targets failed"

# 2. Broken named sets fail their target: printed, counted, exit 1.
gen cycle; gen undefined; gen deep
run_tf collect --bep="$tf_tmp/cycle.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-cycle"
[ "$rc" -eq 1 ] || fail "cycle: exit $rc, want 1: $out"
assert_contains "$out" "topfetch collect: target //p:a failed: 1 output of //p:a could not be fetched: named set '0' (record 2) contains itself: '0' -> '1' -> '0'"
assert_contains "$out" "0 of 1 target complete"
assert_contains "$out" "topfetch collect: 1 target failed (see above); the exit code is 1."
run_tf collect --bep="$tf_tmp/undefined.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-undef"
[ "$rc" -eq 1 ] || fail "undefined set: exit $rc, want 1: $out"
assert_contains "$out" "target //p:a failed: 1 output of //p:a could not be fetched: named set '9' is unknown: referenced by named set '0'"
run_tf collect --bep="$tf_tmp/deep.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-deep"
[ "$rc" -eq 1 ] || fail "deep chain: exit $rc, want 1: $out"
assert_contains "$out" "target //p:a failed:"
assert_contains "$out" "1 target failed"
for d in o-cycle o-undef o-deep; do no_temporaries "$tf_tmp/$d"; done

# 3. A NUL byte in File.name would cut the path short (a.txt\0zz written as
#    a.txt): the record is refused, nothing is written.
gen nul
run_tf collect --bep="$tf_tmp/nul.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-nul"
[ "$rc" -eq 3 ] || fail "NUL: exit $rc, want 3: $out"
assert_contains "$out" "record 2 does not decode: BuildEvent.named_set_of_files.files.name (field 1) is a string with a NUL byte in it"
[ -z "$(ls -A "$tf_tmp/o-nul" 2>/dev/null)" ] || fail "NUL: files written: $(ls -RA "$tf_tmp/o-nul")"

# 4. Terminal escapes in a label and a set id are printed escaped, never raw.
gen escape
run_tf collect --bep="$tf_tmp/escape.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-esc"
[ "$rc" -eq 1 ] || fail "escape: exit $rc, want 1: $out"
assert_contains "$out" 'target //p:\x1b[2J failed'
assert_contains "$out" "named set '\\x1b]0;owned\\x07' is unknown"
case "$out" in *$'\033'*|*$'\a'*) fail "a raw control character reached the terminal: $(printf '%q' "$out")" ;; esac
# 5. A length of 2^63-1 is an unusable digest, not Bazel-before-7's missing
#    one; --output_dir with missing parents is created ("created if missing").
gen huge-length
run_tf collect --bep="$tf_tmp/huge-length.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/new/a/b/out"
[ "$rc" -eq 1 ] || fail "huge length: exit $rc, want 1: $out"
assert_contains "$out" "the event's digest of bazel-out/k8-fastbuild/bin/a.txt cannot be used: size 9223372036854775807 of blob $H is out of range"
case "$out" in *"Bazel before 7"*) fail "huge length taken for a missing digest: $out" ;; esac
[ -d "$tf_tmp/new/a/b/out" ] || fail "--output_dir with missing parents was not created"
[ -z "$(ls -A "$tf_tmp/new/a/b/out")" ] || fail "huge length: files written"
# 6. Memory in proportion to what the BEP holds (defect 6): 300,000 empty
#    named sets referenced by one target took 483 MB; each set costs well
#    under 1 KB now. (Under ASan the allocator's own overhead dominates.)
python3 - "$tf_tmp/many.bep" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
n = 300000
ev = [ev_started()] + [ev_named_set(str(i)) for i in range(n)] + [ev_target("//p:a", [str(i) for i in range(n)]), ev_last()]
open(sys.argv[1], "wb").write(bep(ev))
PY
run_tf_rss collect --bep="$tf_tmp/many.bep" --remote_cache="$tf_tmp/cache" --output_dir="$tf_tmp/o-many"
[ "$rc" -eq 0 ] || fail "300k sets: exit $rc: $out"
sanitized || [ "$rss" -lt 330000 ] || fail "300k empty named sets took $rss KiB"
echo "collect_hostile: ok"
