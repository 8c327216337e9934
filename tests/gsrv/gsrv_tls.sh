#!/usr/bin/env bash
# The gRPC front end over TLS (--listen=grpcs://, --tls_cert_file,
# --tls_key_file, --tls_ca_file), with two TLS clients that are not the
# server's stack: the gRPC C core (tests/gsrv/gsrv_call with TF_GSRV_CA) and
# topfetch's own gRPC client (libcurl + OpenSSL, `topfetch get
# --remote_cache=grpcs://`). (Debian's Bazel 4.2.3 cannot be a grpcs://
# client here: its Netty has no ALPN with the JDK's TLS provider, it crashes
# with "JDK provider does not support ALPN protocol".)
#  1. Configuration errors at start, exit 2 naming the flag and the file:
#     grpcs:// without a key, a key that is not the certificate's, a missing
#     file, TLS flags without a grpcs:// listener.
#  2. Trusting the test CA: Capabilities, a blob read through ByteStream
#     (verified), a whole BES stream (the invocation's gated BEP complete).
#     A plaintext client and a client trusting another CA get nothing.
#  3. --tls_ca_file: a client without a certificate gets nothing; with one
#     signed by that CA both clients are served.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
. "$TF_SOURCE_ROOT/tests/gsrv/lib.sh"
fx="${TF_FIXTURES:?}/run2_minimal_hits"
make_pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=other" \
  -keyout "$tf_tmp/other.key" -out "$tf_tmp/other.pem" 2>/dev/null
nginx_start
blob=$(head -c 300000 /dev/urandom | tee "$tf_tmp/blob" | cas_put_stdin)
inv=$(bep_uuid "$fx/bep.json")
enc build.bazel.remote.execution.v2.GetCapabilitiesRequest </dev/null >"$tf_tmp/capreq"
mkdir "$tf_tmp/b"
python3 "$msgs" bes "$fx/bep.bin" "$inv" 1 46 "$tf_tmp/b/e" >"$tf_tmp/b/list"

# 1.
base=(proxy --listen=grpcs://127.0.0.1:0 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o")
run_tf "${base[@]}" --tls_cert_file="$pki/srv.pem"
[ "$rc" -eq 2 ] || fail "grpcs:// without a key: exit $rc: $out"
assert_contains "$out" "--listen=grpcs:// needs --tls_cert_file and --tls_key_file" "no key"
run_tf "${base[@]}" --tls_cert_file="$pki/srv.pem" --tls_key_file="$tf_tmp/other.key"
[ "$rc" -eq 2 ] || fail "a key of another certificate: exit $rc: $out"
assert_contains "$out" "--tls_key_file=$tf_tmp/other.key: this key does not belong to the --tls_cert_file certificate" "wrong key"
run_tf "${base[@]}" --tls_cert_file="$tf_tmp/missing.pem" --tls_key_file="$pki/srv.key"
[ "$rc" -eq 2 ] || fail "a missing certificate file: exit $rc: $out"
assert_contains "$out" "--tls_cert_file=$tf_tmp/missing.pem: cannot read it" "missing certificate"
run_tf "${base[@]}" --tls_cert_file="$pki/srv.key" --tls_key_file="$pki/srv.key"
[ "$rc" -eq 2 ] || fail "a key given as the certificate: exit $rc: $out"
assert_contains "$out" "--tls_cert_file=$pki/srv.key: no PEM certificate in it" "key as certificate"
run_tf proxy --listen=grpc://127.0.0.1:0 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o" \
  --tls_cert_file="$pki/srv.pem" --tls_key_file="$pki/srv.key"
[ "$rc" -eq 2 ] || fail "TLS flags on grpc://: exit $rc: $out"
assert_contains "$out" "are for a --listen=grpcs://HOST:PORT listener" "TLS flags without grpcs"
echo "1. configuration errors: ok"

tls_listening() {
  GRPC_PORT=$(sed -n 's|^topfetch proxy: listening on grpcs://[^ ,]*:\([0-9]*\),.*|\1|p' "$PROXY_LOG")
  [ -n "$GRPC_PORT" ]
}
tls_start() { # LOG ARGS...
  local log=$1
  shift
  proxy_start "$log" --listen=grpcs://127.0.0.1:0 --tls_cert_file="$pki/srv.pem" --tls_key_file="$pki/srv.key" \
    --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/out" --build_event_dir="$tf_tmp/ev" "$@"
  wait_for 30 "the proxy's grpcs:// line in $PROXY_LOG" tls_listening
  GRPC_ADDR="127.0.0.1:$GRPC_PORT"
}
# get NAME [FLAGS...]: the blob through topfetch's own grpcs:// client.
get() {
  local name=$1
  shift
  run_tf get --remote_cache="grpcs://$GRPC_ADDR" --tls_certificate="$pki/ca.pem" "$@" "$blob/300000" -o "$tf_tmp/$name"
  [ "$rc" -eq 0 ] || fail "$name: topfetch get through grpcs:// exit $rc: $out"
  cmp -s "$tf_tmp/$name" "$tf_tmp/blob" || fail "$name: other bytes through grpcs://"
}

# 2.
tls_start p2.log
TF_GSRV_CA="$pki/ca.pem" gcall cap $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status "Capabilities over TLS" 0
get got2
# shellcheck disable=SC2046
TF_GSRV_CA="$pki/ca.pem" gcall bes $BES/PublishBuildToolEventStream $(cat "$tf_tmp/b/list")
want_status "a BES stream over TLS" 0
wait_line "$PROXY_LOG" "^topfetch proxy: build $inv ended" 60
python3 - "$tf_tmp/ev/$inv.json" <<'PY' || fail "the gated BEP of the stream over TLS"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert len(ev) == 45 and ev[-1].get("lastMessage"), len(ev)
PY
gcall plain $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
[ "$gstatus" = 14 ] || fail "a plaintext call on the grpcs:// port: status $gstatus ($gmsg), want 14 UNAVAILABLE"
TF_GSRV_CA="$tf_tmp/other.pem" gcall other $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
[ "$gstatus" = 14 ] || fail "a client trusting another CA: status $gstatus ($gmsg), want 14 UNAVAILABLE"
proxy_stop
[ "$proxy_rc" -eq 1 ] || { cat "$PROXY_LOG"; fail "proxy exit $proxy_rc (want 1: the fixture's files are in no cache)"; }
echo "2. Capabilities, ByteStream and BES over grpcs://; plaintext and another CA refused: ok"

# 3.
rm -rf "$tf_tmp/ev"
tls_start p3.log --tls_ca_file="$pki/ca.pem"
TF_GSRV_CA="$pki/ca.pem" gcall nocert $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
[ "$gstatus" = 14 ] || fail "a client without a certificate: status $gstatus ($gmsg), want 14 UNAVAILABLE"
TF_GSRV_CA="$pki/ca.pem" TF_GSRV_CERT="$pki/cli.pem" TF_GSRV_KEY="$pki/cli.key" \
  gcall cert $REAPI.Capabilities/GetCapabilities "$tf_tmp/capreq"
want_status "Capabilities with a client certificate" 0
get got3 --tls_client_certificate="$pki/cli.pem" --tls_client_key="$pki/cli.key"
proxy_stop
[ "$proxy_rc" -eq 0 ] || { cat "$PROXY_LOG"; fail "proxy exit $proxy_rc"; }
echo "3. a required client certificate: ok"
echo "gsrv_tls: ok"
