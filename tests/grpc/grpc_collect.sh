#!/usr/bin/env bash
# Real Bazel 4.2.3 builds straight against a real REAPI server (Bazel's own
# remote worker over grpc://, instance team/ci). Its --remote_download_minimal
# BEP then names each output by a bytestream://HOST:PORT/team/ci/blobs/HASH/SIZE
# URI; topfetch collect fetches them from --remote_cache=grpc://... (the
# URI's host replaced, its instance kept), every read naming the build's
# invocation id, and every file is byte-identical to what Bazel itself puts
# in bazel-bin with --remote_download_toplevel.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
. "$TF_SOURCE_ROOT/tests/lib/bazel.sh"
reapi_worker_start
bazel_setup "${TF_FIXTURES:?}/workspace"
targets=(//pkg:combined //pkg:multi //pkg:exe //pkg:big //pkg:treeart)
# 1. The first build fills the worker (uploads over gRPC).
bazel_run build --color=no --curses=no --remote_cache="$WORKER_URL" --remote_instance_name=team/ci "${targets[@]}" >"$tf_tmp/b1.log" 2>&1 ||
  { cat "$tf_tmp/b1.log"; fail "bazel build (populate) failed"; }
# 2. From the cache, without the bytes: the BEP names the outputs by URI.
bazel_run clean >/dev/null 2>&1
bazel_run build --color=no --curses=no --remote_cache="$WORKER_URL" --remote_instance_name=team/ci --remote_download_minimal \
  --build_event_binary_file="$tf_tmp/bep.bin" --build_event_json_file="$tf_tmp/bep.json" "${targets[@]}" \
  >"$tf_tmp/b2.log" 2>&1 || { cat "$tf_tmp/b2.log"; fail "bazel build (minimal) failed"; }
assert_contains "$(cat "$tf_tmp/b2.log")" "remote cache hit" "the minimal build"
grep -q "\"uri\":\"bytestream://127.0.0.1:$WORKER_PORT/team/ci/blobs/" "$tf_tmp/bep.json" ||
  fail "Bazel's BEP has no bytestream:// URIs of the worker"

logged=$(wc -l <"$WORKER_LOG")
run_tf collect --bep="$tf_tmp/bep.bin" --remote_cache="$WORKER_URL" --output_dir="$tf_tmp/out"
[ "$rc" -eq 0 ] || fail "collect: exit $rc: $out"
assert_contains "$out" "5 of 5 targets complete" "collect"
assert_contains "$out" "0 lost, 0 failed, 0 without a digest" "collect"
# Every read names the build (RequestMetadata.tool_invocation_id: the BEP's uuid).
uuid=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["started"]["uuid"])' "$tf_tmp/bep.json")
tail -n +"$((logged + 1))" "$WORKER_LOG" | grep 'tf-worker: ByteStream.Read' >"$tf_tmp/reads" ||
  fail "collect made no ByteStream reads at the worker"
! grep -v "invocation=$uuid\$" "$tf_tmp/reads" ||
  fail "reads of collect without the build's invocation id $uuid"
# ...and the instance of the URIs (no --remote_instance_name given to collect).
! grep -v "ByteStream.Read team/ci/blobs/" "$tf_tmp/reads" || fail "reads of collect without the URIs' instance team/ci"
echo "collect: $(wc -l <"$tf_tmp/reads") reads, each naming invocation $uuid"

# 3. Bazel's own download of the top-level outputs, for comparison.
bazel_run clean >/dev/null 2>&1
bazel_run build --color=no --curses=no --remote_cache="$WORKER_URL" --remote_instance_name=team/ci --remote_download_toplevel "${targets[@]}" \
  >"$tf_tmp/b3.log" 2>&1 || { cat "$tf_tmp/b3.log"; fail "bazel build (toplevel) failed"; }
bin=$(bazel_run info --color=no bazel-bin 2>/dev/null)
[ -d "$bin" ] || fail "cannot find Bazel's bazel-bin (bazel info said '$bin')"
n=0
for p in combined.txt multi/one.txt multi/two.txt multi/three.bin hello.sh big.dat treeart_dir/a.txt \
         treeart_dir/sub/b.txt treeart_dir/copy_of_input.txt treeart_dir/sub/empty.txt; do
  ours="$tf_tmp/out/pkg/$p"
  [ -f "$ours" ] || fail "collect did not write pkg/$p ($(cd "$tf_tmp/out" && find . -type f | head -20 | tr '\n' ' '))"
  cmp -s "$ours" "$bin/pkg/$p" || fail "pkg/$p differs from Bazel's own download"
  n=$((n + 1))
done
echo "grpc_collect: $n files identical to Bazel's --remote_download_toplevel"
