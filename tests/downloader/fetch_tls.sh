#!/usr/bin/env bash
# https with our own CA (--tls_certificate), HTTP/2 when the server offers it,
# mutual TLS (--tls_client_certificate/--tls_client_key), and user:password in
# the URL as Basic auth, never printed.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
need openssl
make_pki

tls="ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key;"
nginx_start "" "ssl http2" "$tls ssl_client_certificate $pki/ca.pem; ssl_verify_client optional;
  if (\$ssl_client_verify != SUCCESS) { return 403; }"
: >"$tf_tmp/m"
for i in $(seq 1 40); do
  h=$(head -c $((i * 1000)) /dev/urandom | cas_put_stdin)
  echo "$h $((i * 1000)) f$i" >>"$tf_tmp/m"
done

# Without our CA: the TLS handshake fails, clearly, at start (exit 2).
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o0" --manifest="$tf_tmp/m" --remote_retries=0
[ "$rc" -eq 2 ] || fail "untrusted server: exit $rc: $out"
assert_contains "$out" "cannot use the cache $NGINX_URL"
assert_contains "$out" "certificate"

# With the CA but no client certificate: 403 at start (exit 2), not retried.
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m" --tls_certificate="$pki/ca.pem"
[ "$rc" -eq 2 ] || fail "no client cert: exit $rc: $out"
assert_contains "$out" "refused the credentials (HTTP 403)"

# Mutual TLS: everything arrives, over HTTP/2, multiplexed on few connections.
before=$(nginx_count "GET ")
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/m" \
  --tls_certificate="$pki/ca.pem" --tls_client_certificate="$pki/cli.pem" --tls_client_key="$pki/cli.key"
[ "$rc" -eq 0 ] || fail "mutual TLS: exit $rc: $out"
assert_contains "$out" "40 of 40 files in place"
[ "$(nginx_count " 200 [0-9]* HTTP/2.0 ")" -eq 40 ] || fail "expected 40 HTTP/2 requests, log: $(tail -3 "$NGINX_LOG")"
conns=$(grep " 200 [0-9]* HTTP/2.0 " "$NGINX_LOG" | grep -o 'conn=[0-9]*' | sort -u | wc -l)
[ "$conns" -le 2 ] || fail "HTTP/2 used $conns connections for 40 requests; expected multiplexing"
nginx_stop

# Basic auth from user:password in the URL; the password never appears in output.
printf 'ci:%s\n' "$(openssl passwd -apr1 'pa55word')" >"$tf_tmp/htpasswd"
chmod a+r "$tf_tmp/htpasswd"
nginx_start "auth_basic cache; auth_basic_user_file $tf_tmp/htpasswd;"
h=$(printf 'secret stuff\n' | cas_put_stdin)
echo "$h 13 s.txt" >"$tf_tmp/m2"
url_auth=$(echo "$NGINX_URL" | sed 's|://|://ci:pa55word@|')
run_tf fetch --remote_cache="$url_auth" --output_dir="$tf_tmp/o3" --manifest="$tf_tmp/m2"
[ "$rc" -eq 0 ] || fail "basic auth: exit $rc: $out"
[ "$(nginx_count "GET /cas/$h 200 13 HTTP/1.1 conn=[0-9]* user=ci")" -eq 1 ] || fail "no authenticated GET in the log"
url_bad=$(echo "$NGINX_URL" | sed 's|://|://ci:wrong-pa55@|')
run_tf fetch --remote_cache="$url_bad" --output_dir="$tf_tmp/o4" --manifest="$tf_tmp/m2"
[ "$rc" -eq 2 ] || fail "bad password: exit $rc"
assert_contains "$out" "the cache $NGINX_URL refused the credentials (HTTP 401)"
case "$out" in *wrong-pa55*|*pa55word*) fail "a password was printed: $out" ;; esac
echo "fetch_tls: ok"
