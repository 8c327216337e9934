#!/usr/bin/env bash
# fetch from a real REAPI server (Bazel's own remote worker) over grpc://:
# many small blobs, one large blob (hashed by the verifier thread), a blob
# wanted at several paths, the empty blob, an executable, an instance name,
# and a blob the server does not have (lost, with the server's NOT_FOUND).
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
. "$TF_SOURCE_ROOT/tests/grpc/relay.sh"
reapi_worker_start

out_dir="$tf_tmp/out"
manifest="$tf_tmp/manifest.txt"
: >"$manifest"
python3 - "$WORKER_CAS/cas" "$manifest" <<'PY'
import hashlib, os, sys
cas, manifest = sys.argv[1:3]
with open(manifest, "a") as m:
    for i in range(1, 501):
        data = os.urandom(i * 37 % 9000 + 1)
        h = hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(cas, h[:2]), exist_ok=True)
        with open(os.path.join(cas, h[:2], h), "wb") as f:
            f.write(data)
        m.write("%s %d dir%d/file%d.bin\n" % (h, len(data), i % 7, i))
PY
big=$(head -c $((48 << 20)) /dev/urandom | reapi_cas_put_stdin)
echo "$big $((48 << 20)) large/big.bin" >>"$manifest"
exe=$(printf '#!/bin/sh\necho hi\n' | reapi_cas_put_stdin)
echo "$exe $(stat -c %s "$WORKER_CAS/cas/${exe:0:2}/$exe") x bin/hello.sh" >>"$manifest"
shared=$(head -c 100000 /dev/urandom | reapi_cas_put_stdin)
echo "$shared 100000 a/shared.dat" >>"$manifest"
echo "$shared 100000 b/shared.dat" >>"$manifest"
echo "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 empty.txt" >>"$manifest"

check_files() { # OUT_DIR MANIFEST
  python3 - "$1" "$2" <<'PY' || fail "files differ from the manifest"
import hashlib, os, stat, sys
out, bad = sys.argv[1], 0
for line in open(sys.argv[2]):
    f = line.split()
    if not f or f[0].startswith("#"):
        continue
    path, mode = (f[3], 0o755) if f[2] == "x" else (f[2], 0o644)
    p = os.path.join(out, path)
    if not os.path.isfile(p):
        print("missing " + path); bad += 1; continue
    if hashlib.sha256(open(p, "rb").read()).hexdigest() != f[0] or os.path.getsize(p) != int(f[1]):
        print("wrong bytes in " + path); bad += 1
    if stat.S_IMODE(os.stat(p).st_mode) != mode:
        print("%s has mode %o, want %o" % (path, stat.S_IMODE(os.stat(p).st_mode), mode)); bad += 1
sys.exit(1 if bad else 0)
PY
}

run_tf fetch --remote_cache="$WORKER_URL" --output_dir="$out_dir" --manifest="$manifest" --remote_max_connections=16
[ "$rc" -eq 0 ] || fail "exit $rc: $out"
assert_contains "$out" "505 of 505 files in place" "summary"
assert_contains "$out" "0 lost, 0 corrupt, 0 failed, 0 local errors" "summary"
check_files "$out_dir" "$manifest"
[ -z "$(find "$out_dir" -name '.tftmp.*')" ] || fail "temporary files left behind"
# The worker has no BatchReadBlobs (as 4.2.3): asked once, then every blob
# is a ByteStream.Read of its own.
[ "$(grep -c 'tf-worker: BatchReadBlobs UNIMPLEMENTED' "$WORKER_LOG")" -ge 1 ] ||
  fail "BatchReadBlobs was not tried: $(grep -c tf-worker "$WORKER_LOG") calls logged"
reads=$(grep -c 'tf-worker: ByteStream.Read' "$WORKER_LOG")
[ "$reads" -ge 503 ] || fail "$reads ByteStream reads for 503 blobs after the fallback (want one each at least)"

# The same through a counting TCP relay: the calls share a few HTTP/2
# connections (cleartext, libcurl 7.88.1 included), not one each.
relay_start relay
run_tf fetch --remote_cache="$RELAY_URL" --output_dir="$tf_tmp/relayed" \
  --manifest="$manifest" --remote_max_connections=16
[ "$rc" -eq 0 ] || fail "through the relay: exit $rc: $out"
conns=$(awk '{print $6}' "$tf_tmp/relay.stats")
[ "$conns" -le 32 ] || fail "503 calls took $conns connections: not multiplexed"

# Again: everything is already in place, nothing is fetched.
run_tf fetch --remote_cache="$WORKER_URL" --output_dir="$out_dir" --manifest="$manifest"
[ "$rc" -eq 0 ] || fail "second run: exit $rc: $out"
assert_contains "$out" "(0 fetched, 504 already present" "second run"

# An instance name goes into every resource name (Bazel's worker accepts any).
run_tf fetch --remote_cache="$WORKER_URL" --remote_instance_name=main/ci --output_dir="$tf_tmp/inst" \
  --manifest="$manifest" --remote_header=x-team=build
[ "$rc" -eq 0 ] || fail "with an instance name: exit $rc: $out"
check_files "$tf_tmp/inst" "$manifest"

# A blob the server does not have: lost, in the server's words; the others arrive.
missing=$(head -c 5000 /dev/urandom | sha256sum | cut -c1-64)
printf '%s 5000 gone.bin\n%s 100000 here.dat\n' "$missing" "$shared" >"$tf_tmp/m2"
run_tf fetch --remote_cache="$WORKER_URL" --output_dir="$tf_tmp/out2" --manifest="$tf_tmp/m2"
[ "$rc" -eq 1 ] || fail "a lost blob: exit $rc (want 1): $out"
assert_contains "$out" "lost: gone.bin" "lost line"
assert_contains "$out" "NOT_FOUND" "lost line"
assert_contains "$out" "ByteStream.Read blobs/$missing/5000" "lost line"
assert_contains "$out" "1 of 2 files in place" "summary"
[ ! -e "$tf_tmp/out2/gone.bin" ] || fail "a file was written for a lost blob"
echo PASS
