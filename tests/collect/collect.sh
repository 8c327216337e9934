#!/usr/bin/env bash
# topfetch collect on the real Bazel 4.2.3 BEP of a --remote_download_minimal
# build (run 2 of the fixtures), against nginx serving the real cache.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
fx="${TF_FIXTURES:?}"
bep="$fx/run2_minimal_hits/bep.bin"
nginx_start
tar -xzf "$fx/cache.tar.gz" -C "$NGINX_CACHE"
chmod -R a+rX "$NGINX_CACHE"

# 1. Bazel 4.2.3 with an HTTP cache writes no digests: without a store,
#    collect stops, says why and what to do, and writes nothing.
run_tf collect --bep="$bep" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o1"
[ "$rc" -eq 3 ] || fail "no store: exit $rc, want 3: $out"
assert_contains "$out" "12 files of completed targets have no digest"
assert_contains "$out" "Bazel before 7 with an HTTP or disk cache records no digests"
assert_contains "$out" "run the build through 'topfetch proxy'"
[ -z "$(ls -A "$tf_tmp/o1")" ] || fail "files written without a store"

# A proxy run fills the store: here the session driver reports the cache's
# ActionResults, as the proxy does for each AC hit.
"$TF_DRIVER" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/proxy-out" --store="$tf_tmp/store.db" \
  --mode=minimal --actions="$NGINX_CACHE/ac" >/dev/null

# 2. Every target but //pkg:tool (its file comes from a local symlink
#    action, never cached): exit 0, files at short paths, modes, bytes.
targets=()
for t in combined multi exe big treeart empty; do targets+=(--target=//pkg:$t); done
run_tf collect --bep="$bep" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2" --store="$tf_tmp/store.db" \
  "${targets[@]}" --build_event_json_file="$tf_tmp/o2.json"
[ "$rc" -eq 0 ] || fail "collect: exit $rc: $out"
assert_contains "$out" "6 of 6 targets complete"
assert_contains "$out" "topfetch: 11 of 11 files in place (11 fetched, 0 already present)"
got=$(cd "$tf_tmp/o2" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
want="pkg/big.dat pkg/combined.txt pkg/empty.txt pkg/hello.sh pkg/multi/one.txt pkg/multi/three.bin pkg/multi/two.txt pkg/treeart_dir/a.txt pkg/treeart_dir/copy_of_input.txt pkg/treeart_dir/sub/b.txt pkg/treeart_dir/sub/empty.txt "
[ "$got" = "$want" ] || fail "files: $got"
[ "$(stat -c %a "$tf_tmp/o2/pkg/hello.sh")" = 755 ] || fail "hello.sh mode"
[ "$(sha256sum "$tf_tmp/o2/pkg/big.dat" | cut -c1-8)" = 01ab038e ] || fail "big.dat bytes"
grep -q '"digest":"c7d9472e' "$tf_tmp/o2.json" || fail "the gated BEP carries no digests"

# 3. All targets: //pkg:tool's file cannot be found; exit 1, told why.
run_tf collect --bep="$bep" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o3" --store="$tf_tmp/store.db"
[ "$rc" -eq 1 ] || fail "with //pkg:tool: exit $rc, want 1: $out"
assert_contains "$out" "6 of 7 targets complete"
assert_contains "$out" "1 file of completed targets has no digest"
assert_contains "$out" "the --store has no record of it from a proxy run"

# 4. --keep_path_prefix, the BEP on standard input, a filter regex, a group.
set +e
out=$("$TOPFETCH" collect --bep=- --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o4" --store="$tf_tmp/store.db" \
  --keep_path_prefix --target=//pkg:multi --target=//pkg:exe <"$bep" 2>&1)
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "stdin/keep_path_prefix: exit $rc: $out"
[ -f "$tf_tmp/o4/bazel-out/k8-fastbuild/bin/pkg/multi/three.bin" ] || fail "--keep_path_prefix ignored"
run_tf collect --bep="$bep" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o5" --store="$tf_tmp/store.db" \
  "${targets[@]}" --output_filter='\.txt$'
[ "$rc" -eq 0 ] || fail "filter: exit $rc: $out"
[ -z "$(cd "$tf_tmp/o5" && find . -type f ! -name '*.txt')" ] || fail "the regex filter let other files through"
[ -f "$tf_tmp/o5/pkg/treeart_dir/sub/b.txt" ] || fail "the regex filter dropped a tree file"
run_tf collect --bep="$bep" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o6" --store="$tf_tmp/store.db" \
  "${targets[@]}" --output_groups=debug_files
[ "$rc" -eq 3 ] || fail "a group no target has: exit $rc, want 3: $out"
assert_contains "$out" "--output_groups: no collected target has an output group 'debug_files'"
[ -z "$(ls -A "$tf_tmp/o6")" ] || fail "files of another output group were collected"

# 5. A BEP cut short: what it names is collected, and exit 3 says why.
head -c 20000 "$bep" >"$tf_tmp/cut.bin"
run_tf collect --bep="$tf_tmp/cut.bin" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o7" --store="$tf_tmp/store.db"
[ "$rc" -eq 3 ] || fail "truncated BEP: exit $rc: $out"
assert_contains "$out" "cut.bin: incomplete stream"

# 6. Bazel 7 style digests: two configurations, one short path, different
#    bytes: an error, never an overwrite; --keep_path_prefix keeps both.
h1=$(printf 'fastbuild\n' | cas_put_stdin)
h2=$(printf 'opt build!\n' | cas_put_stdin)
"$TF_MAKE_INPUTS" "$tf_tmp/in" "$h1" 10 "$h2" 11
run_tf collect --bep="$tf_tmp/in/bep-conflict.bin" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o8"
[ "$rc" -eq 1 ] || fail "conflict: exit $rc: $out"
assert_contains "$out" "1 conflicting"
assert_contains "$out" "1 path is named with two different files (see the target errors above): nothing was overwritten"
[ "$(cat "$tf_tmp/o8/c/same.txt")" = fastbuild ] || fail "the first file was overwritten"
run_tf collect --bep="$tf_tmp/in/bep-conflict.bin" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o9" --keep_path_prefix
[ "$rc" -eq 0 ] || fail "conflict with --keep_path_prefix: exit $rc: $out"
[ "$(cat "$tf_tmp/o9/bazel-out/k8-opt/bin/c/same.txt")" = "opt build!" ] || fail "k8-opt file"

# 7. A bytestream:// URI: the host is replaced by --remote_cache.
run_tf collect --bep="$tf_tmp/in/bep-bytestream.bin" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o10"
[ "$rc" -eq 0 ] || fail "bytestream: exit $rc: $out"
[ "$(cat "$tf_tmp/o10/b/z.bin")" = "opt build!" ] || fail "bytestream file"

# 8. Usage.
run_tf collect --bep="$bep"
[ "$rc" -eq 2 ] || fail "usage: exit $rc"
run_tf collect --help
[ "$rc" -eq 0 ] || fail "--help: exit $rc"
for f in bep remote_cache output_dir store keep_path_prefix target output_groups output_filter remote_download_regex \
         build_event_binary_file build_event_json_file build_event_publish "Exit codes"; do
  assert_contains "$out" "$f" "--help"
done
# 9. The bundled example (what README's first command runs), disk backend.
run_tf collect --bep="$TF_SOURCE_ROOT/examples/bep.bin" --remote_cache="$TF_SOURCE_ROOT/examples/disk-cache" \
  --output_dir="$tf_tmp/ex"
[ "$rc" -eq 0 ] || fail "bundled example: exit $rc: $out"
assert_contains "$out" "3 of 3 targets complete"
assert_contains "$out" "topfetch: 5 of 5 files in place"
[ "$(sh "$tf_tmp/ex/app/bin/hello.sh")" = "hello from a blob topfetch fetched" ] || fail "example hello.sh"
cmp -s "$tf_tmp/ex/app/share/greeting.txt" "$tf_tmp/ex/app/share/copy-of-greeting.txt" || fail "example copy"
# One BEP per run: a second --bep (or --bep_follow for the proxy) is refused,
# never "the last one wins".
run_tf collect --bep="$tf_tmp/a.bin" --bep="$tf_tmp/b.bin" --remote_cache="$tf_tmp" --output_dir="$tf_tmp/twice"
[ "$rc" -eq 2 ] || fail "--bep twice: exit $rc: $out"
assert_contains "$out" "flag '--bep' was given twice"
run_tf proxy --listen=127.0.0.1:0 --remote_cache="$tf_tmp" --bep_follow="$tf_tmp/a.bin" --bep_follow="$tf_tmp/b.bin"
[ "$rc" -eq 2 ] || fail "--bep_follow twice: exit $rc: $out"
assert_contains "$out" "flag '--bep_follow' was given twice"
[ ! -e "$tf_tmp/twice" ] || fail "a refused run created its output folder"
echo "collect: ok"
