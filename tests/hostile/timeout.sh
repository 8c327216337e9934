#!/usr/bin/env bash
# --remote_timeout is a silence limit (issue 11, defect 9): a cache that
# sends a byte every 1.5 s is not cut at --remote_timeout=3; one that goes
# silent after half the body is cut about --remote_timeout later.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/faults/lib.sh"
root="$tf_tmp/root"
mkdir -p "$root/cas" "$root/ac"
head -c 100000 /dev/urandom >"$tf_tmp/blob"
H=$(sha256sum "$tf_tmp/blob" | cut -d' ' -f1)
cp "$tf_tmp/blob" "$root/cas/$H"
printf '%s 100000 blob.bin\n' "$H" >"$tf_tmp/m.txt"
bad_start "$root" slowdrip
run_tf fetch --remote_cache="$BAD_URL" --output_dir="$tf_tmp/o1" \
  --manifest="$tf_tmp/m.txt" --remote_timeout=3 --remote_retries=0
[ "$rc" -eq 0 ] || fail "a byte every 1.5 s was cut at --remote_timeout=3: $out"
cmp -s "$tf_tmp/o1/blob.bin" "$tf_tmp/blob" || fail "blob.bin"
bad_stop

bad_start "$root" stall
t0=$(date +%s%N)
run_tf fetch --remote_cache="$BAD_URL" --output_dir="$tf_tmp/o2" \
  --manifest="$tf_tmp/m.txt" --remote_timeout=2 --remote_retries=0
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" -eq 1 ] || fail "stall: exit $rc: $out"
assert_contains "$out" "timed out: no data for --remote_timeout=2s"
[ "$ms" -lt 5000 ] || fail "silence after some bytes took $ms ms to detect with --remote_timeout=2"
[ ! -e "$tf_tmp/o2/blob.bin" ] || fail "a partial file at the final path"
[ -z "$(find "$tf_tmp/o2" -name '.tftmp*')" ] || fail "a temporary file was left"
echo "timeout: ok ($ms ms to detect 2 s of silence)"
