#!/usr/bin/env bash
# Faults against a real REAPI server (Bazel's own remote worker):
#  - a blob deleted from the worker's CAS: lost, not failed;
#  - an answer cut in the middle of a large blob: the read goes on at the
#    offset it reached (ByteStream read_offset), not from the start;
#  - the worker stopped in the middle of a run: failed after the retries,
#    naming the attempts, and no partial file anywhere.
# The issue's other faults: BatchReadBlobs answered UNIMPLEMENTED (the
# fallback) in grpc_fetch.sh, lost and corrupt inside a batch in
# grpc_batch.sh, a wrong CA for grpcs:// and a call refused for missing
# metadata in grpc_tls.sh.
# The cut and the slow link come from a small TCP relay (tests/grpc/relay.py):
# the real server cannot make those on demand.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
need python3
reapi_worker_start

. "$TF_SOURCE_ROOT/tests/grpc/relay.sh"

# 1. Lost: the worker's CAS no longer has the blob.
keep=$(head -c 3000 /dev/urandom | reapi_cas_put_stdin)
gone=$(head -c 4000 /dev/urandom | reapi_cas_put_stdin)
rm "$WORKER_CAS/cas/${gone:0:2}/$gone"
printf '%s 3000 keep.bin\n%s 4000 gone.bin\n' "$keep" "$gone" >"$tf_tmp/m1"
run_tf fetch --remote_cache="$WORKER_URL" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m1"
[ "$rc" -eq 1 ] || fail "lost: exit $rc: $out"
assert_contains "$out" "lost: gone.bin ($gone/4000)" "lost"
assert_contains "$out" "1 lost, 0 corrupt, 0 failed" "lost summary"
[ -f "$tf_tmp/o1/keep.bin" ] && [ ! -e "$tf_tmp/o1/gone.bin" ] || fail "lost: wrong files in place"

# 2. A 32 MiB read cut after 12 MiB: resumed at the offset.
size=$((32 << 20))
big=$(head -c "$size" /dev/urandom | reapi_cas_put_stdin)
echo "$big $size big.bin" >"$tf_tmp/m2"
relay_start cut --cut $((12 << 20))
run_tf fetch --remote_cache="$RELAY_URL" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/m2"
[ "$rc" -eq 0 ] || fail "cut: exit $rc: $out"
[ "$(relay_cuts cut)" -eq 1 ] || fail "the relay did not cut the answer"
[ "$(sha256sum <"$tf_tmp/o2/big.bin" | cut -c1-64)" = "$big" ] || fail "cut: wrong bytes"
total=$(relay_total cut)
# From the start again would move 44 MiB; resumed, 32 MiB and the framing.
[ "$total" -lt $((size + (2 << 20))) ] ||
  fail "cut: $total bytes came from the server for a $size-byte blob: not resumed at the offset"

# 3. The worker stopped in the middle of a slow 32 MiB read and 200 small ones.
python3 - "$WORKER_CAS/cas" "$tf_tmp/m3" <<'PY'
import hashlib, os, sys
cas, manifest = sys.argv[1:3]
with open(manifest, "w") as m:
    for i in range(200):
        data = os.urandom(4096)
        h = hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(cas, h[:2]), exist_ok=True)
        open(os.path.join(cas, h[:2], h), "wb").write(data)
        m.write("%s 4096 small/%d.bin\n" % (h, i))
PY
echo "$big $size big.bin" >>"$tf_tmp/m3"
relay_start slow --rate $((4 << 20))
"$TOPFETCH" fetch --remote_cache="$RELAY_URL" --output_dir="$tf_tmp/o3" --manifest="$tf_tmp/m3" \
  --remote_retries=2 --remote_max_connections=4 >"$tf_tmp/o3.log" 2>&1 &
fetch_pid=$!
tf_track "$fetch_pid"
wait_for 60 "the slow read to pass 4 MiB" relay_past slow $((4 << 20))
kill -KILL "$WORKER_PID"
set +e
wait "$fetch_pid"
rc=$?
set -e
out=$(cat "$tf_tmp/o3.log")
[ "$rc" -eq 1 ] || fail "worker stopped: exit $rc (want 1): $out"
assert_contains "$out" "of 201 files in place" "worker stopped"
assert_contains "$out" "0 lost, 0 corrupt," "worker stopped: failed, not lost or corrupt"
assert_contains "$out" "failed after 3 attempts (--remote_retries=2)" "worker stopped"
[ -z "$(find "$tf_tmp/o3" -name '.tftmp.*')" ] || fail "worker stopped: temporary files left behind"
[ ! -e "$tf_tmp/o3/big.bin" ] || fail "worker stopped: a partial big.bin"
# Whatever arrived before the stop is whole.
find "$tf_tmp/o3/small" -type f 2>/dev/null | while read -r f; do
  [ "$(stat -c %s "$f")" -eq 4096 ] || fail "worker stopped: $f is partial"
done
echo PASS
