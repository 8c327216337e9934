#!/usr/bin/env bash
# Real Bazel 4.2.3 with --remote_cache=grpc://<topfetch proxy> and
# --remote_download_minimal, the proxy forwarding to UPSTREAM ($1: nginx, a
# real HTTP cache, worker, Bazel's own remote worker over grpc://, or disk, a
# --disk_cache directory), on tests/e2e/workspace:
#  1. Empty cache: every action runs, its outputs and result go up through
#     the gRPC front end (ByteStream Write, UpdateActionResult) into the
#     upstream; the proxy follows the BEP and fetches the top-level files.
#  2. bazel clean, the same build: every action a cache hit through
#     GetActionResult; the proxy puts exactly the top-level files in
#     --output_dir, byte-identical to what Bazel's own
#     --remote_download_toplevel (3.) writes, and (nginx, worker: their own
#     logs) no intermediate's blob is read from the upstream.
#  4. The upstream loses left.txt's blob; bazel clean; build: the lookup of
#     left's action is answered NOT_FOUND (validation), Bazel runs exactly that
#     action again and uploads it; everything exits 0.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
. "$TF_SOURCE_ROOT/tests/interop/bazel_lib.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
upstream=${1:?nginx, worker or disk}
case "$upstream" in
  nginx) nginx_start; UP="$NGINX_URL" ;;
  worker) reapi_worker_start; UP="$WORKER_URL" ;;
  disk) UP="$tf_tmp/disk"; mkdir -p "$UP" ;;
  *) fail "unknown upstream $upstream" ;;
esac
cas_path() {
  case "$upstream" in
    nginx) echo "$NGINX_CACHE/cas/$1" ;;
    worker) echo "$WORKER_CAS/cas/${1:0:2}/$1" ;;
    *) echo "$UP/cas/${1:0:2}/$1" ;;
  esac
}
# The upstream's own log of what it was asked (the worker logs each
# ByteStream.Read as "tf-worker: ByteStream.Read <resource name> ...").
upstream_log() { if [ "$upstream" = nginx ]; then nginx_sync; echo "$NGINX_LOG"; else echo "$WORKER_LOG"; fi; }
lines() { if [ "$upstream" = disk ]; then echo 0; else wc -l <"$(upstream_log)"; fi; }
since() { tail -n +"$(($1 + 1))" "$(upstream_log)"; }
read_of() { if [ "$upstream" = nginx ]; then echo "GET /cas/$1"; else echo "ByteStream.Read [^ ]*blobs/$1/"; fi; }
ws=$(bazel_ws ws)
targets=(//pkg:left //pkg:right //pkg:multi //pkg:exe //pkg:big //pkg:tree)
bin=bazel-out/k8-fastbuild/bin/pkg
top="left.txt right.txt multi/copy.txt multi/two.txt multi/zeros.bin hello.sh big.dat tree_dir/a.txt
tree_dir/copy.txt tree_dir/sub/b.txt tree_dir/sub/run.sh tree_dir/sub/empty.txt"
files_in() { (cd "$1" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' '); }
want_files=$(for f in $top; do echo "$bin/$f"; done | sort | tr '\n' ' ')

# build N BAZEL-ARGS...: one build through a new gRPC proxy that follows its
# BEP and exits at its end.
build() {
  local n=$1
  shift
  gsrv_start "proxy$n.log" --remote_cache="$UP" --store="$tf_tmp/store.db" --output_dir="$tf_tmp/out$n" \
    --bep_follow="$tf_tmp/bep$n.bin" --exit_after_build --build_event_json_file="$tf_tmp/tf$n.json"
  bz "$ws" build --remote_cache="$GRPC_URL" --remote_download_minimal --build_event_binary_file="$tf_tmp/bep$n.bin" \
    "$@" "${targets[@]}" >"$tf_tmp/bazel$n.log" 2>&1 || { cat "$tf_tmp/bazel$n.log" "$PROXY_LOG"; fail "bazel build $n failed"; }
  proxy_wait
  [ "$proxy_rc" -eq 0 ] || { cat "$tf_tmp/bazel$n.log" "$PROXY_LOG"; fail "build $n: proxy exit $proxy_rc"; }
  echo "build $n: $(grep 'processes:' "$tf_tmp/bazel$n.log")"
  grep '^topfetch' "$PROXY_LOG"
  [ "$(files_in "$tf_tmp/out$n")" = "$want_files" ] || fail "build $n files: $(files_in "$tf_tmp/out$n"); want $want_files"
  python3 - "$tf_tmp/tf$n.json" <<'PY' || fail "topfetch's BEP of build $n"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert ev[-1].get("lastMessage"), "no last_message"
done = [e for e in ev if "completed" in e]
assert len(done) == 6 and all(e["completed"].get("success") for e in done), done
PY
}

# 1.
build 1
grep -q 'processes: .*[0-9] processwrapper-sandbox' "$tf_tmp/bazel1.log" || fail "build 1 did not run its actions"
bb=$(readlink -f "$ws/bazel-bin")
for f in $top; do
  cmp -s "$tf_tmp/out1/$bin/$f" "$bb/pkg/$f" || fail "build 1: $f differs from the file Bazel built"
  h=$(sha256sum "$bb/pkg/$f" | cut -d' ' -f1)
  [ ! -s "$bb/pkg/$f" ] || [ -f "$(cas_path "$h")" ] || fail "build 1: $f was not uploaded to the upstream"
done
h_shared=$(sha256sum "$bb/pkg/shared.txt" | cut -d' ' -f1)
h_stage=$(sha256sum "$bb/pkg/stage.txt" | cut -d' ' -f1)

# 2.
bz "$ws" clean >/dev/null 2>&1
l2=$(lines)
build 2
grep -q 'processes: .*remote cache hit' "$tf_tmp/bazel2.log" || fail "build 2 was not served from the cache"
! grep -q 'processwrapper-sandbox' "$tf_tmp/bazel2.log" || fail "build 2 ran actions"
if [ "$upstream" != disk ]; then
  since "$l2" >"$tf_tmp/log2"
  ! grep -q "$(read_of "$h_shared")" "$tf_tmp/log2" || fail "the blob of the intermediate shared.txt was read upstream"
  ! grep -q "$(read_of "$h_stage")" "$tf_tmp/log2" || fail "the blob of the intermediate stage.txt was read upstream"
fi

# 3. What Bazel itself downloads, through the same gRPC front end.
bz "$ws" clean >/dev/null 2>&1
gsrv_start proxy3.log --remote_cache="$UP" --output_dir="$tf_tmp/out3"
bz "$ws" build --remote_cache="$GRPC_URL" --remote_download_toplevel "${targets[@]}" >"$tf_tmp/bazel3.log" 2>&1 \
  || { cat "$tf_tmp/bazel3.log"; fail "bazel build 3 (--remote_download_toplevel) failed"; }
proxy_stop
bb=$(readlink -f "$ws/bazel-bin")
for f in $top; do
  [ -f "$bb/pkg/$f" ] || fail "Bazel did not download $f with --remote_download_toplevel"
  cmp -s "$tf_tmp/out2/$bin/$f" "$bb/pkg/$f" || fail "$f differs from what Bazel downloads"
done
[ -x "$tf_tmp/out2/$bin/hello.sh" ] || fail "hello.sh is not executable"
[ ! -e "$bb/pkg/shared.txt" ] || fail "Bazel downloaded an intermediate itself"
echo "2./3. parity with --remote_download_toplevel: ok"

# 4.
h_left=$(sha256sum "$tf_tmp/out2/$bin/left.txt" | cut -d' ' -f1)
rm "$(cas_path "$h_left")"
bz "$ws" clean >/dev/null 2>&1
build 4 --execution_log_json_file="$tf_tmp/exec4.json"
grep -q 'processes: .*1 processwrapper-sandbox' "$tf_tmp/bazel4.log" || fail "build 4 did not run exactly one action"
grep -q "1 failed validation" "$PROXY_LOG" || fail "build 4: the lookup of left's action was not answered NOT_FOUND"
# The execution log: the actions that were not cache hits, by their outputs.
ran=$(python3 - "$tf_tmp/exec4.json" <<'PY'
import json, sys
d, t, i, out = json.JSONDecoder(), open(sys.argv[1]).read().strip(), 0, []
while i < len(t):
    e, i = d.raw_decode(t, i)
    i = len(t) - len(t[i:].lstrip())
    out += [] if e.get("remoteCacheHit") else [e.get("listedOutputs")]
print(out)
PY
)
[ "$ran" = "[['bazel-out/k8-fastbuild/bin/pkg/left.txt']]" ] || fail "build 4: the actions run again: $ran, want left's alone"
[ -f "$(cas_path "$h_left")" ] || fail "build 4: left.txt was not uploaded again"
cmp -s "$tf_tmp/out4/$bin/left.txt" "$tf_tmp/out2/$bin/left.txt" || fail "build 4: left.txt differs"
echo "gsrv_bazel ($upstream): ok"
