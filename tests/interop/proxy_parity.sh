#!/usr/bin/env bash
# What `topfetch proxy` puts in --output_dir is, file for file, what Bazel's
# own --remote_download_toplevel materialises, with real Bazel 4.2.3 + nginx:
#  1. bazel build of a genrule chain, a Starlark rule with two outputs and an
#     extra output group (--output_groups=+extra), a tree artifact (with an
#     empty file), an executable genrule, an sh_binary with a data runfile
#     (its executable a symlink a local action makes, never cached) and an
#     sh_test, in minimal mode through the proxy: the proxy exits 0, every
#     TargetComplete in its BEP is successful, --output_dir holds
#     byte-identical copies of exactly the files Bazel's own
#     --remote_download_toplevel puts in bazel-bin for the same command
#     (symlinks followed; the runfiles trees and manifests Bazel makes
#     locally in every mode are not downloads), and no intermediate's blob
#     was asked for (nginx's log).
#  2. bazel test of the sh_test twice through the proxy (the second a cached
#     result after bazel clean): test.log and test.xml in --output_dir both
#     times, identical to what Bazel's own --remote_download_toplevel writes.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/interop/bazel_lib.sh"
nginx_start
ws=$(bazel_ws ws)
targets=(//pkg:left //pkg:pair //pkg:tree //pkg:exe //pkg:app //pkg:check_test)
bin=bazel-out/k8-fastbuild/bin
logs=bazel-out/k8-fastbuild/testlogs/pkg/check_test
lines() { nginx_sync; wc -l <"$NGINX_LOG"; }
since() { nginx_sync; tail -n +"$(($1 + 1))" "$NGINX_LOG"; }
# The files (and symlinks, followed) below a folder, without the runfiles
# trees and manifests Bazel makes locally whatever it downloads.
files_in() { (cd "$1" && find . \( -type f -o -type l \) ! -path '*.runfiles/*' ! -name '*.runfiles_manifest' \
  | sed 's|^\./||' | sort | tr '\n' ' '); }
through_proxy() { # NAME BAZEL-ARGS...: one Bazel command through a one-shot proxy
  local n=$1
  shift
  proxy_start "proxy_$n.log" --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out_$n" --bep_follow="$tf_tmp/bep.bin" \
    --exit_after_build --build_event_json_file="$tf_tmp/gated_$n.json"
  bz "$ws" "$@" --remote_cache="$PROXY_URL" --remote_download_minimal --build_event_binary_file="$tf_tmp/bep.bin" \
    >"$tf_tmp/bazel_$n.log" 2>&1 || { cat "$tf_tmp/bazel_$n.log" "$PROXY_LOG"; fail "bazel ($n) failed"; }
  proxy_wait
  [ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "$n: proxy exit $proxy_rc"; }
  python3 - "$tf_tmp/gated_$n.json" <<'PY' || fail "$n: a TargetComplete of the proxy's BEP is not successful"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert ev[-1].get("lastMessage"), "no last_message"
done = [e for e in ev if "completed" in e]
bad = [e for e in done if not e["completed"].get("success")]
assert done and not bad, bad
PY
}

# The cache filled, then what Bazel itself downloads.
bz "$ws" build --remote_cache="$NGINX_URL" --output_groups=+extra "${targets[@]}" >"$tf_tmp/fill.log" 2>&1 \
  || { cat "$tf_tmp/fill.log"; fail "filling the cache failed"; }
h_shared=$(sha256sum "$ws/bazel-bin/pkg/shared.txt" | cut -d' ' -f1)
bz "$ws" clean >/dev/null 2>&1
bz "$ws" build --remote_cache="$NGINX_URL" --remote_download_toplevel --output_groups=+extra "${targets[@]}" \
  >"$tf_tmp/ref.log" 2>&1 || { cat "$tf_tmp/ref.log"; fail "the --remote_download_toplevel build failed"; }
ref="$tf_tmp/ref"
cp -rL "$(readlink -f "$ws/bazel-bin")" "$ref"
want=$(files_in "$ref")
[ ! -e "$ref/pkg/shared.txt" ] || fail "Bazel downloaded the intermediate shared.txt itself"

# 1.
bz "$ws" clean >/dev/null 2>&1
l1=$(lines)
through_proxy build build --output_groups=+extra "${targets[@]}"
got=$(files_in "$tf_tmp/out_build/$bin")
[ "$got" = "$want" ] || fail "files: $got; Bazel's own: $want"
for f in $want; do
  cmp -s "$tf_tmp/out_build/$bin/$f" "$ref/$f" || fail "$f differs from Bazel's own"
done
[ -x "$tf_tmp/out_build/$bin/pkg/app" ] || fail "the sh_binary's executable is not executable"
[ -f "$tf_tmp/out_build/$bin/pkg/tree_dir/sub/empty.txt" ] || fail "the tree's empty file is missing"
! since "$l1" | grep -q "GET /cas/$h_shared" || fail "the intermediate shared.txt was fetched"
echo "1. build parity: ok ($(echo $want | wc -w) files)"

# 2. bazel test, twice; then what Bazel itself writes.
bz "$ws" clean >/dev/null 2>&1
through_proxy test1 test //pkg:check_test
grep -q 'PASSED' "$tf_tmp/bazel_test1.log" || fail "test 1 did not pass"
for f in test.log test.xml; do
  [ -f "$tf_tmp/out_test1/$logs/$f" ] || { cat "$PROXY_LOG"; fail "test 1: $f is not in --output_dir"; }
  cmp -s "$tf_tmp/out_test1/$logs/$f" "$ws/bazel-testlogs/pkg/check_test/$f" || fail "test 1: $f differs from Bazel's"
done
bz "$ws" clean >/dev/null 2>&1
through_proxy test2 test //pkg:check_test
grep -q '(cached) PASSED' "$tf_tmp/bazel_test2.log" || fail "test 2 was not a cached result"
bz "$ws" clean >/dev/null 2>&1
bz "$ws" test --remote_cache="$NGINX_URL" --remote_download_toplevel //pkg:check_test >"$tf_tmp/ref_test.log" 2>&1 \
  || { cat "$tf_tmp/ref_test.log"; fail "bazel test with --remote_download_toplevel failed"; }
ours=$(files_in "$tf_tmp/out_test2/$logs")
# (test.cache_status is Bazel's own note, written locally in every mode.)
theirs=$(files_in "$ws/bazel-testlogs/pkg/check_test" | sed 's/test\.cache_status //')
[ "$ours" = "$theirs" ] || fail "test 2 (cached): test outputs $ours; Bazel's own: $theirs"
for f in test.log test.xml; do
  [ -f "$tf_tmp/out_test2/$logs/$f" ] || { cat "$PROXY_LOG"; grep testResult "$tf_tmp/gated_test2.json"; find "$tf_tmp/out_test2"; fail "test 2 (cached): $f is not in --output_dir"; }
  cmp -s "$tf_tmp/out_test2/$logs/$f" "$ws/bazel-testlogs/pkg/check_test/$f" || fail "test 2: $f differs from Bazel's own"
done
echo "2. test outputs: ok"
echo "proxy_parity: ok"
