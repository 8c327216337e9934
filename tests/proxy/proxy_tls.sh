#!/usr/bin/env bash
# An https upstream: --tls_certificate (our own CA) and mutual TLS
# (--tls_client_certificate/--tls_client_key) pass through to the proxy's
# upstream connections, which use HTTP/2 when nginx offers it. Without the
# CA the handshake fails and Bazel's side gets a 502 saying so.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
need openssl
make_pki
nginx_start "" "ssl http2" "ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key;
  ssl_client_certificate $pki/ca.pem; ssl_verify_client optional;
  if (\$ssl_client_verify != SUCCESS) { return 403; }"
h=$(blob "$tf_tmp/b" 3000000)

# Not trusting the server: 502 naming the certificate problem.
proxy_start p0.log --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o0"
req GET "$PROXY_URL/cas/$h"
[ "$code" = 502 ] || fail "untrusted upstream: HTTP $code"
assert_contains "$body" "certificate" "502 body"
proxy_stop

# Our CA but no client certificate: nginx answers 403, we answer 502.
proxy_start p1.log --remote_cache="$NGINX_URL" --tls_certificate="$pki/ca.pem" --output_dir="$tf_tmp/o1"
req GET "$PROXY_URL/cas/$h"
[ "$code" = 502 ] || fail "no client certificate: HTTP $code"
assert_contains "$body" "answered HTTP 403" "502 body"
proxy_stop

# Mutual TLS: a round trip, streamed, over HTTP/2.
proxy_start p2.log --remote_cache="$NGINX_URL" --tls_certificate="$pki/ca.pem" \
  --tls_client_certificate="$pki/cli.pem" --tls_client_key="$pki/cli.key" --output_dir="$tf_tmp/o2"
req PUT "$PROXY_URL/cas/$h" -T "$tf_tmp/b"
[ "$code" = 201 ] || fail "mTLS PUT: HTTP $code: $body"
cmp -s "$tf_tmp/b" "$NGINX_CACHE/cas/$h" || fail "nginx does not hold the uploaded bytes"
req GET "$PROXY_URL/cas/$h"
[ "$code" = 200 ] && cmp -s "$tf_tmp/b" "$tf_tmp/body" || fail "mTLS GET: HTTP $code"
req HEAD "$PROXY_URL/cas/$h"
[ "$code" = 200 ] || fail "mTLS HEAD: HTTP $code"
[ "$(nginx_count "PUT /cas/$h 201 0 HTTP/2.0")" -eq 1 ] || fail "the upload did not use HTTP/2"
[ "$(nginx_count "GET /cas/$h 200 3000000 HTTP/2.0")" -eq 1 ] || fail "the download did not use HTTP/2"
proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "exit $proxy_rc"
echo "proxy_tls: ok"
