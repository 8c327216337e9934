#!/usr/bin/env bash
# grpcs:// to Bazel's own remote worker behind a real nginx that terminates
# TLS and HTTP/2 and forwards the calls (grpc_pass; the worker's own --tls_*
# need a native library Debian's Bazel jar lacks). The right CA fetches and
# multiplexes; a wrong CA is refused before any transfer, saying it is the
# certificate. And a call refused for missing metadata: nginx by default
# drops header names with dots, so the worker never sees our RequestMetadata
# and refuses (INVALID_ARGUMENT); topfetch says so, in the server's words.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
need openssl
make_pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=some other CA" \
  -keyout "$tf_tmp/other.key" -out "$tf_tmp/other.pem" 2>/dev/null
reapi_worker_start
tls="ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key;"

# 1. Without our RequestMetadata (nginx drops build.bazel.remote...-bin).
nginx_start "grpc_pass grpc://127.0.0.1:$WORKER_PORT;" "ssl http2" "$tls"
url="grpcs://127.0.0.1:$NGINX_PORT"
echo "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b856 1 x.bin" >"$tf_tmp/m0"
run_tf fetch --remote_cache="$url" --tls_certificate="$pki/ca.pem" --output_dir="$tf_tmp/o0" --manifest="$tf_tmp/m0"
[ "$rc" -eq 2 ] || fail "without metadata: exit $rc (want 2): $out"
assert_contains "$out" "refused GetCapabilities: INVALID_ARGUMENT: RequestMetadata not received" "without metadata"
assert_contains "$out" "a call without RequestMetadata" "without metadata"
nginx_stop

# 2. With the metadata through: TLS, our CA, HTTP/2 multiplexed.
nginx_start "grpc_pass grpc://127.0.0.1:$WORKER_PORT;" "ssl http2" "$tls ignore_invalid_headers off;"
url="grpcs://127.0.0.1:$NGINX_PORT"

python3 - "$WORKER_CAS/cas" "$tf_tmp/m" <<'PY'
import hashlib, os, sys
cas, manifest = sys.argv[1:3]
with open(manifest, "w") as m:
    for i in range(50):
        data = os.urandom(2000 + i)
        h = hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(cas, h[:2]), exist_ok=True)
        open(os.path.join(cas, h[:2], h), "wb").write(data)
        m.write("%s %d f%d.bin\n" % (h, len(data), i))
PY
run_tf fetch --remote_cache="$url" --tls_certificate="$pki/ca.pem" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m"
[ "$rc" -eq 0 ] || fail "grpcs with the right CA: exit $rc: $out"
assert_contains "$out" "50 of 50 files in place" "grpcs"
reads=$(nginx_count "POST /google.bytestream.ByteStream/Read 200")
[ "$reads" -eq 50 ] || fail "grpcs: nginx forwarded $reads ByteStream reads, want 50"
conns=$(nginx_sync; grep "ByteStream/Read" "$NGINX_LOG" | sed 's/.*conn=\([0-9]*\).*/\1/' | sort -u | wc -l)
[ "$conns" -lt 50 ] || fail "grpcs: $conns connections for 50 calls: not multiplexed"

run_tf fetch --remote_cache="$url" --tls_certificate="$tf_tmp/other.pem" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/m"
[ "$rc" -eq 2 ] || fail "grpcs with a wrong CA: exit $rc (want 2): $out"
assert_contains "$out" "check --tls_certificate" "wrong CA"
[ -z "$(ls -A "$tf_tmp/o2" 2>/dev/null)" ] || fail "wrong CA: files were written"
echo "grpc_tls: ok"
