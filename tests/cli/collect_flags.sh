#!/usr/bin/env bash
# topfetch collect on the bundled example (examples/bep.bin, its disk cache):
# what matches nothing exits 3 naming it, Bazel's regex adds files, the
# filter has its own name, and a workspace's .bazelrc names the cache.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
ex="$TF_SOURCE_ROOT/examples"
bep="$ex/bep.bin"
cache="$ex/disk-cache"
files() { (cd "$1" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' '); }

# Bazel's forms are taken: durations, booleans, 0 connections (no limit).
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o1" --remote_timeout=1m \
  --remote_max_connections=0 --keep_path_prefix=no --output_groups=+default
[ "$rc" -eq 0 ] || fail "Bazel's forms: exit $rc: $out"
assert_contains "$out" "3 of 3 targets complete"
assert_contains "$out" "topfetch: 5 of 5 files in place"
[ -f "$tf_tmp/o1/app/bin/hello.sh" ] || fail "short paths expected with --keep_path_prefix=no"
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o1" --remote_timeout=60sec
[ "$rc" -eq 2 ] || fail "a bad duration: exit $rc: $out"
assert_contains "$out" "flag '--remote_timeout' takes a duration like 60s, 1m, 500ms"

# A --target that is not in the BEP: exit 3, named.
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o2" --target=//app:hello \
  --target=//app:helo
[ "$rc" -eq 3 ] || fail "unknown target: exit $rc, want 3: $out"
assert_contains "$out" "--target=//app:helo matched no completed target of the BEP"
case "$out" in *"--target=//app:hello matched"*) fail "a matching target was reported: $out" ;; esac
[ -f "$tf_tmp/o2/app/bin/hello.sh" ] || fail "the matching target was not collected"

# A BEP that completes no target: exit 3, never a green "0 of 0".
python3 - "$tf_tmp/none.bep" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["TF_SOURCE_ROOT"], "tests", "lib"))
from hostile import *
open(sys.argv[1], "wb").write(bep([ev_started(), ev_last()]))
PY
run_tf collect --bep="$tf_tmp/none.bep" --remote_cache="$cache" --output_dir="$tf_tmp/o2b"
[ "$rc" -eq 3 ] || fail "no completed target: exit $rc, want 3: $out"
assert_contains "$out" "the BEP completes no target: nothing to collect"

# A group no target has (+extra, as Bazel adds it to the defaults): exit 3, named.
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o3" --output_groups=+extra
[ "$rc" -eq 3 ] || fail "+extra: exit $rc, want 3: $out"
assert_contains "$out" "no collected target has an output group 'extra'"
[ "$(files "$tf_tmp/o3" | wc -w)" -eq 5 ] || fail "+extra must keep the default groups: $(files "$tf_tmp/o3")"
# Repeated: the later entry wins (-default after +default): nothing left, exit 3.
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o4" --output_groups=+default \
  --output_groups=-default
[ "$rc" -eq 3 ] || fail "-default: exit $rc, want 3: $out"
assert_contains "$out" "--output_groups left no file of the 3 completed targets to collect"

# The filter (--output_filter) matches anywhere in the path; nothing matched is exit 3.
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o5" --output_filter='greeting'
[ "$rc" -eq 0 ] || fail "filter: exit $rc: $out"
[ "$(files "$tf_tmp/o5")" = "app/share/copy-of-greeting.txt app/share/greeting.txt " ] || fail "filter: $(files "$tf_tmp/o5")"
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o6" --output_filter='\.jar$'
[ "$rc" -eq 3 ] || fail "a filter that matches nothing: exit $rc, want 3: $out"
assert_contains "$out" "--output_filter matched none of the 5 files of the completed targets"

# --remote_download_regex as Bazel: whole exec path, Java syntax, and it adds.
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o7" --output_filter='greeting' \
  --remote_download_regex='bazel-out/[^/]+/bin/app/(?:lib|bin)/\w+\.bin'
[ "$rc" -eq 0 ] || fail "regex: exit $rc: $out"
[ "$(files "$tf_tmp/o7")" = "app/lib/data.bin app/share/copy-of-greeting.txt app/share/greeting.txt " ] ||
  fail "regex must add data.bin (whole-path match) and nothing else: $(files "$tf_tmp/o7")"
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o7b" --output_filter='greeting' \
  --remote_download_regex='data\.bin'
[ "$rc" -eq 0 ] || fail "regex, part of the path: exit $rc: $out"
[ ! -e "$tf_tmp/o7b/app/lib/data.bin" ] || fail "a regex matching only part of the path added a file"
run_tf collect --bep="$bep" --remote_cache="$cache" --output_dir="$tf_tmp/o7" --remote_download_regex='a(b'
[ "$rc" -eq 2 ] || fail "a bad regex: exit $rc: $out"
assert_contains "$out" "--remote_download_regex='a(b' is not a valid regular expression"

# A Bazel workspace whose .bazelrc names the cache: nothing else is needed.
ws="$tf_tmp/ws"
mkdir -p "$ws/tools" "$ws/sub" "$tf_tmp/home"
: >"$ws/WORKSPACE"
cat >"$ws/.bazelrc" <<EOF
# Bazel's own flags are skipped; the cache flags apply.
build --jobs=4 --remote_download_minimal --remote_cache=http://127.0.0.1:1
import %workspace%/tools/ci.bazelrc
try-import %workspace%/user.bazelrc
EOF
cat >"$ws/tools/ci.bazelrc" <<EOF
build:ci --remote_cache=$cache --remote_timeout=30s
build:slow --remote_timeout=a-while
EOF
export HOME="$tf_tmp/home"
cd "$ws/sub"
run_tf collect --bep="$bep" --output_dir="$tf_tmp/o8" --config=ci
[ "$rc" -eq 0 ] || fail "bazelrc: exit $rc: $out"
assert_contains "$out" "3 of 3 targets complete"
assert_contains "$out" "topfetch: 5 of 5 files in place"
# The command line wins over the rc files.
run_tf collect --bep="$bep" --output_dir="$tf_tmp/o9" --remote_cache="$cache"
[ "$rc" -eq 0 ] || fail "command line over bazelrc: exit $rc: $out"
# A malformed value of a flag topfetch knows: exit 2 naming the file and line.
run_tf collect --bep="$bep" --output_dir="$tf_tmp/o10" --config=ci --config=slow
[ "$rc" -eq 2 ] || fail "malformed rc value: exit $rc, want 2: $out"
assert_contains "$out" "$ws/tools/ci.bazelrc:2: flag '--remote_timeout' takes a duration"
run_tf collect --bep="$bep" --output_dir="$tf_tmp/o10" --config=cd
[ "$rc" -eq 2 ] || fail "undefined config: exit $rc: $out"
assert_contains "$out" "--config=cd is not defined in any rc file"
# The proxy reads the rc files too, and refuses a cache that is its own address.
echo "build:loop --remote_cache=http://127.0.0.1:59999" >>"$ws/.bazelrc"
run_tf proxy --listen=127.0.0.1:59999 --output_dir="$tf_tmp/o13" --config=loop
[ "$rc" -eq 2 ] || fail "proxy pointed at itself: exit $rc, want 2: $out"
assert_contains "$out" "--remote_cache names the proxy's own --listen address 127.0.0.1:59999"
# --bazelrc outside a workspace, and ~/.bazelrc with it.
cd "$tf_tmp"
echo "build --remote_cache=$cache" >"$tf_tmp/home/.bazelrc"
echo "build --remote_max_connections=4" >"$tf_tmp/extra.rc"
run_tf collect --bep="$bep" --output_dir="$tf_tmp/o11" --bazelrc="$tf_tmp/extra.rc"
[ "$rc" -eq 0 ] || fail "--bazelrc and ~/.bazelrc: exit $rc: $out"
run_tf collect --bep="$bep" --output_dir="$tf_tmp/o12"
[ "$rc" -eq 2 ] || fail "outside a workspace without --bazelrc no rc file is read: exit $rc: $out"
assert_contains "$out" "--bep, --remote_cache (or a .bazelrc naming it) and --output_dir are required"
# Every command's --help: complete, wrapped at 100 columns.
for c in fetch collect proxy serve; do
  run_tf "$c" --help
  [ "$rc" -eq 0 ] || fail "$c --help: exit $rc"
  long=$(printf '%s\n' "$out" | awk 'length > 100')
  [ -z "$long" ] || fail "$c --help has lines over 100 columns: $long"
  for f in remote_cache remote_header remote_cache_header remote_instance_name remote_max_connections \
           remote_timeout=DURATION remote_retries bazelrc config home_rc workspace_rc "Exit codes"; do
    assert_contains "$out" "$f" "$c --help"
  done
done
run_tf proxy --help
for f in remote_download_toplevel remote_download_minimal remote_download_all remote_download_regex \
         "output_groups=[+|-]"; do
  assert_contains "$out" "$f" "proxy --help"
done
echo "cli_collect_flags: ok"
