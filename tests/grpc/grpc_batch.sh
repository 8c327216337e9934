#!/usr/bin/env bash
# BatchReadBlobs against Bazel's own remote worker with BatchReadBlobs served
# (a test patch, tests/lib/reapi_worker.sh; 4.2.3's answers UNIMPLEMENTED,
# the fallback grpc_fetch.sh shows): 600 small blobs arrive in a few calls,
# within the 4 MiB batch size, not one ByteStream.Read each; a large blob
# still goes by ByteStream.Read; a small blob the worker lacks is lost with
# the worker's NOT_FOUND; a blob whose bytes in the worker are wrong (the
# worker checks what it reads and answers INTERNAL) is tried again on its
# own and fails with the worker's message.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
REAPI_JAVA_OPTS=-Dtf.worker.batch_read=true reapi_worker_start
manifest="$tf_tmp/manifest.txt"
python3 - "$WORKER_CAS/cas" "$manifest" <<'PY'
import hashlib, os, sys
cas, manifest = sys.argv[1:3]
with open(manifest, "w") as m:
    for i in range(600):
        data = os.urandom(4096 + i)
        h = hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(cas, h[:2]), exist_ok=True)
        open(os.path.join(cas, h[:2], h), "wb").write(data)
        m.write("%s %d small/%d.bin\n" % (h, len(data), i))
PY
big=$(head -c $((3 << 20)) /dev/urandom | reapi_cas_put_stdin)
echo "$big $((3 << 20)) big.bin" >>"$manifest"
run_tf fetch --remote_cache="$WORKER_URL" --output_dir="$tf_tmp/out" --manifest="$manifest" --remote_max_connections=4
[ "$rc" -eq 0 ] || fail "exit $rc: $out"
assert_contains "$out" "601 of 601 files in place" "summary"
while read -r h size path; do
  [ "$(sha256sum <"$tf_tmp/out/$path" | cut -c1-64)" = "$h" ] || fail "wrong bytes in $path"
done <"$manifest"
calls=$(grep -c 'tf-worker: BatchReadBlobs [0-9]' "$WORKER_LOG")
blobs=$(sed -n 's/.*tf-worker: BatchReadBlobs \([0-9]*\)$/\1/p' "$WORKER_LOG" | paste -sd+ | bc)
reads=$(grep -c 'tf-worker: ByteStream.Read' "$WORKER_LOG" || true)
echo "600 small blobs in $calls BatchReadBlobs calls ($blobs blobs asked), $reads ByteStream reads"
[ "$blobs" -eq 600 ] || fail "BatchReadBlobs asked for $blobs blobs, want the 600 small ones"
[ "$calls" -ge 1 ] && [ "$calls" -le 10 ] || fail "$calls BatchReadBlobs calls for 600 blobs of 4 KiB"
[ "$reads" -eq 1 ] || fail "$reads ByteStream reads, want 1 (the 3 MiB blob)"

# Lost and corrupt inside a batch.
gone=$(head -c 5000 /dev/urandom | sha256sum | cut -c1-64)
good=$(head -c 6000 /dev/urandom | reapi_cas_put_stdin)
bad=$(head -c 7000 /dev/urandom | reapi_cas_put_stdin)
head -c 7000 /dev/urandom >"$WORKER_CAS/cas/${bad:0:2}/$bad"
printf '%s 5000 gone.bin\n%s 6000 good.bin\n%s 7000 bad.bin\n' "$gone" "$good" "$bad" >"$tf_tmp/m2"
run_tf fetch --remote_cache="$WORKER_URL" --output_dir="$tf_tmp/out2" --manifest="$tf_tmp/m2"
[ "$rc" -eq 1 ] || fail "lost and corrupt: exit $rc (want 1): $out"
assert_contains "$out" "lost: gone.bin" "lost line"
assert_contains "$out" "NOT_FOUND" "lost line"
assert_contains "$out" "failed: bad.bin" "failed line"
assert_contains "$out" "ByteStream.Read blobs/$bad/7000 failed: INTERNAL" "failed line"
assert_contains "$out" "1 of 3 files in place" "summary"
[ -f "$tf_tmp/out2/good.bin" ] && [ ! -e "$tf_tmp/out2/gone.bin" ] && [ ! -e "$tf_tmp/out2/bad.bin" ] ||
  fail "lost and corrupt: wrong files in place"
echo "grpc_batch: ok"
