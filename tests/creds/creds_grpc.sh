#!/usr/bin/env bash
# Credentials on a gRPC cache: Bazel's own remote worker behind a real nginx
# (TLS, grpc_pass) that lets a call through only with the right
# Authorization header. A credential helper's headers and a netrc entry
# (Basic) go on every call as metadata; the helper runs once for the run;
# without credentials the cache refuses at start (exit 2).
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/lib/reapi_worker.sh"
. "$TF_SOURCE_ROOT/tests/creds/lib.sh"
make_pki
reapi_worker_start
tls="ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key; ignore_invalid_headers off;"
basic=$(b64 "grpc-user:grpc-Pw-9")
nginx_start "if (\$http_authorization !~ '^(Bearer grpc-t0ken|Basic $basic)\$') { return 401; }
  grpc_pass grpc://127.0.0.1:$WORKER_PORT;" "ssl http2" "$tls"
url="grpcs://127.0.0.1:$NGINX_PORT"
python3 - "$WORKER_CAS/cas" "$tf_tmp/m" <<'PY'
import hashlib, os, sys
cas, manifest = sys.argv[1:3]
with open(manifest, "w") as m:
    for i in range(20):
        data = os.urandom(1000 + i)
        h = hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(cas, h[:2]), exist_ok=True)
        open(os.path.join(cas, h[:2], h), "wb").write(data)
        m.write("%s %d f%d.bin\n" % (h, len(data), i))
PY
export HOME="$tf_tmp/home0"; mkdir -p "$HOME"

# No credentials: refused at start.
run_tf fetch --remote_cache="$url" --tls_certificate="$pki/ca.pem" --output_dir="$tf_tmp/o0" --manifest="$tf_tmp/m"
[ "$rc" -eq 2 ] || fail "grpc without credentials: exit $rc: $out"
assert_contains "$out" "cannot use grpcs://127.0.0.1:$NGINX_PORT: GetCapabilities failed" "grpc without credentials"
[ ! -e "$tf_tmp/o0/f1.bin" ] || fail "a file arrived without credentials"

# A credential helper, asked about https://HOST:PORT, once for the run.
cat >"$tf_tmp/helper.sh" <<SH
#!/bin/sh
echo run >>"$tf_tmp/helper.runs"
cat >"$tf_tmp/helper.request"
echo '{"headers": {"authorization": ["Bearer grpc-t0ken"]}}'
SH
chmod 755 "$tf_tmp/helper.sh"
run_tf fetch --remote_cache="$url" --tls_certificate="$pki/ca.pem" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m" \
  --credential_helper="127.0.0.1=$tf_tmp/helper.sh"
[ "$rc" -eq 0 ] || fail "grpc with a credential helper: exit $rc: $out"
assert_contains "$out" "20 of 20 files in place"
[ "$(wc -l <"$tf_tmp/helper.runs")" -eq 1 ] || fail "the helper ran $(wc -l <"$tf_tmp/helper.runs") times"
assert_contains "$(cat "$tf_tmp/helper.request")" "{\"uri\":\"https://127.0.0.1:$NGINX_PORT/\"}" "the helper's request"
[ "$(nginx_count "POST /google.bytestream.ByteStream/Read 200")" -eq 20 ] || fail "not 20 authorized reads"
case "$out" in *grpc-t0ken*) fail "the token was printed: $out" ;; esac

# The netrc entry of the host, as Basic auth metadata.
printf 'machine 127.0.0.1 login grpc-user password grpc-Pw-9\n' >"$tf_tmp/n.netrc"
NETRC="$tf_tmp/n.netrc" run_tf fetch --remote_cache="$url" --tls_certificate="$pki/ca.pem" --output_dir="$tf_tmp/o2" \
  --manifest="$tf_tmp/m"
[ "$rc" -eq 0 ] || fail "grpc with netrc: exit $rc: $out"
assert_contains "$out" "20 of 20 files in place"
echo "creds_grpc: ok"
