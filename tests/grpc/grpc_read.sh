#!/usr/bin/env bash
# tf_downloader_read over grpc:// against Bazel's own remote worker: a CAS
# blob into memory, an ActionResult through GetActionResult (byte for byte
# what the worker stores), NOT_FOUND as lost for both halves, the byte cap.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
reapi_worker_start
blob=$(head -c 3000 /dev/urandom | reapi_cas_put_stdin)
# A serialized ActionResult {output_files {path digest{hash size}} exit_code 0}.
ac=$(echo "action $RANDOM" | sha256sum | cut -c1-64)
mkdir -p "$WORKER_CAS/ac/${ac:0:2}"
python3 - "$blob" "$WORKER_CAS/ac/${ac:0:2}/$ac" <<'PY'
import sys
h, out = sys.argv[1], sys.argv[2]
def ld(field, b): return bytes([field << 3 | 2, len(b)]) + b
digest = ld(1, h.encode()) + bytes([0x10]) + bytes([3000 & 0x7f | 0x80, 3000 >> 7])
of = ld(1, b"pkg/out.bin") + ld(2, digest)
open(out, "wb").write(ld(2, of))
PY
missing=$(echo none | sha256sum | cut -c1-64)
"$TF_READ_GRPC_TEST" "$WORKER_URL" "$blob" 3000 "$ac" "$WORKER_CAS/ac/${ac:0:2}/$ac" "$missing" ||
  fail "reads over gRPC"
echo "grpc_read: ok"
