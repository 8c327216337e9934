#!/usr/bin/env bash
# --remote_http_version: HTTP/2 with prior knowledge on a cleartext port (h2c)
# and by ALPN over TLS, many transfers as streams of few connections, also
# when the server closes its connections after a number of requests (nginx's
# keepalive_requests: a GOAWAY); HTTP/1.1 when asked for; the proxy's
# upstream streams over h2c; clear errors for a bad value, for 1.1 with a
# gRPC cache and for prior knowledge to a server without HTTP/2.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
need python3
need openssl
nginx -V 2>&1 | grep -q http_v2_module || fail "this nginx has no http_v2_module"

# N blobs of 1..4 KiB in the cache and a manifest of them in folders.
make_blobs() { # N
  python3 - "$NGINX_CACHE/cas" "$tf_tmp/m" "$1" <<'PY'
import hashlib, os, sys
cas, manifest, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(manifest, "w") as m:
    for i in range(n):
        b = os.urandom(1024 + i % 3072)
        h = hashlib.sha256(b).hexdigest()
        with open(os.path.join(cas, h), "wb") as f:
            f.write(b)
        os.chmod(os.path.join(cas, h), 0o644)
        m.write(f"{h} {len(b)} d{i % 7}/f{i}\n")
PY
}

# Every file of the manifest in DIR, byte for byte the cache's blob.
check_files() { # DIR
  python3 - "$NGINX_CACHE/cas" "$tf_tmp/m" "$1" <<'PY' || fail "files in $1 differ from the cache's blobs"
import os, sys
cas, manifest, out = sys.argv[1:4]
for line in open(manifest):
    h, size, path = line.split()
    with open(os.path.join(out, path), "rb") as a, open(os.path.join(cas, h), "rb") as b:
        if a.read() != b.read():
            sys.exit(f"{path} differs from blob {h}")
PY
}

# Requests of the GETs in nginx's log since line FROM: protocol and connections.
gets_since() { nginx_sync; tail -n +"$(($1 + 1))" "$NGINX_LOG" | grep '^GET /cas/'; }
log_lines() { nginx_sync; wc -l <"$NGINX_LOG"; }
conns_of() { grep -o 'conn=[0-9]*' | sort -u | wc -l; }

N=600
# Cleartext HTTP/2 (h2c) on NGINX_PORT, HTTP/1.1 on h1; nginx closes a
# connection after 200 requests (GOAWAY), so the 600 transfers need at least 3.
h1=$(free_port)
nginx_start "" "http2" "listen 127.0.0.1:$h1; keepalive_requests 200;"
make_blobs $N

from=$(log_lines)
run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o1" --manifest="$tf_tmp/m" \
  --remote_http_version=2-prior-knowledge
[ "$rc" -eq 0 ] || fail "h2c fetch: exit $rc: $out"
assert_contains "$out" "$N of $N files in place ($N fetched"
check_files "$tf_tmp/o1"
gets=$(gets_since "$from")
[ "$(grep -c ' 200 [0-9]* HTTP/2.0 ' <<<"$gets")" -eq $N ] || fail "h2c: expected $N HTTP/2.0 GETs, log: $(tail -3 "$NGINX_LOG")"
[ "$(grep -vc ' HTTP/2.0 ' <<<"$gets")" -eq 0 ] || fail "h2c: a GET was not HTTP/2: $(grep -v ' HTTP/2.0 ' <<<"$gets" | head -3)"
c=$(conns_of <<<"$gets")
# 3 connections at 200 requests each; a few more where a server's GOAWAY
# met transfers already waiting for the connection. 100 (one per transfer,
# as HTTP/1.1 does) would be no multiplexing.
[ "$c" -ge 3 ] && [ "$c" -le 8 ] || fail "h2c: $N GETs over $c connections; expected 3..8"

# The same with HTTP/1.1 asked for, on the HTTP/1.1 port: no HTTP/2 at all.
from=$(log_lines)
run_tf fetch --remote_cache="http://127.0.0.1:$h1" --output_dir="$tf_tmp/o2" --manifest="$tf_tmp/m" \
  --remote_http_version=1.1
[ "$rc" -eq 0 ] || fail "HTTP/1.1 fetch: exit $rc: $out"
check_files "$tf_tmp/o2"
gets=$(gets_since "$from")
[ "$(grep -c ' 200 [0-9]* HTTP/1.1 ' <<<"$gets")" -eq $N ] || fail "1.1: expected $N HTTP/1.1 GETs"
[ "$(conns_of <<<"$gets")" -gt 8 ] || fail "1.1: expected a connection per transfer in flight"

# Prior knowledge to a server that speaks only HTTP/1.1: refused at start, saying why.
run_tf fetch --remote_cache="http://127.0.0.1:$h1" --output_dir="$tf_tmp/o3" --manifest="$tf_tmp/m" \
  --remote_http_version=2-prior-knowledge --remote_retries=0
[ "$rc" -eq 2 ] || fail "h2c to an HTTP/1.1 server: exit $rc: $out"
assert_contains "$out" "cannot use the cache http://127.0.0.1:$h1"
assert_contains "$out" "2-prior-knowledge needs a server that speaks HTTP/2"

# The proxy's upstream streams (PUT, HEAD, GET) over the same h2c connection.
printf 'proxied over h2c\n' >"$tf_tmp/pb"
ph=$(sha256sum "$tf_tmp/pb" | cut -d' ' -f1)
from=$(log_lines)
proxy_start p.log --remote_cache="$NGINX_URL" --remote_http_version=2-prior-knowledge --output_dir="$tf_tmp/po"
req PUT "$PROXY_URL/cas/$ph" -T "$tf_tmp/pb"
[ "$code" = 201 ] || [ "$code" = 204 ] || fail "proxy PUT over h2c: HTTP $code: $body"
for i in 1 2 3; do
  req GET "$PROXY_URL/cas/$ph"
  [ "$code" = 200 ] && cmp -s "$tf_tmp/pb" "$tf_tmp/body" || fail "proxy GET $i over h2c: HTTP $code"
done
proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "proxy exit $proxy_rc: $(cat "$PROXY_LOG")"
nginx_sync
up=$(tail -n +"$((from + 1))" "$NGINX_LOG" | grep " /cas/$ph ")
[ "$(grep -c '^PUT .* HTTP/2.0 ' <<<"$up")" -eq 1 ] || fail "proxy: no PUT over HTTP/2 upstream: $up"
[ "$(grep -c '^GET .* 200 .* HTTP/2.0 ' <<<"$up")" -ge 1 ] || fail "proxy: no GET over HTTP/2 upstream: $up"
[ "$(grep -vc ' HTTP/2.0 ' <<<"$up")" -eq 0 ] || fail "proxy: an upstream request was not HTTP/2: $up"
nginx_stop

# TLS: ALPN h2 by default and with 2-prior-knowledge; HTTP/1.1 when asked for.
make_pki
nginx_start "" "ssl http2" "ssl_certificate $pki/srv.pem; ssl_certificate_key $pki/srv.key;"
make_blobs 300
N=300
for v in 2 2-prior-knowledge 1.1; do
  from=$(log_lines)
  run_tf fetch --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/t$v" --manifest="$tf_tmp/m" \
    --tls_certificate="$pki/ca.pem" --remote_http_version=$v
  [ "$rc" -eq 0 ] || fail "TLS $v: exit $rc: $out"
  check_files "$tf_tmp/t$v"
  gets=$(gets_since "$from")
  want=HTTP/2.0
  [ "$v" = 1.1 ] && want=HTTP/1.1
  [ "$(grep -c " 200 [0-9]* $want " <<<"$gets")" -eq $N ] || fail "TLS $v: expected $N $want GETs"
  c=$(conns_of <<<"$gets")
  if [ "$want" = HTTP/2.0 ]; then
    [ "$c" -le 2 ] || fail "TLS $v: $N HTTP/2 GETs over $c connections; expected multiplexing"
  else
    [ "$c" -gt 8 ] || fail "TLS 1.1: $N GETs over $c connections; expected one per transfer in flight"
  fi
done
nginx_stop

# Values: a wrong one, and 1.1 with a gRPC cache, are usage errors that say what to do.
run_tf fetch --remote_cache=http://127.0.0.1:1 --output_dir="$tf_tmp/e" --manifest="$tf_tmp/m" \
  --remote_http_version=3
[ "$rc" -eq 2 ] || fail "--remote_http_version=3: exit $rc: $out"
assert_contains "$out" "--remote_http_version=3: expected 2, 2-prior-knowledge or 1.1"
run_tf fetch --remote_cache=grpc://127.0.0.1:1 --output_dir="$tf_tmp/e" --manifest="$tf_tmp/m" \
  --remote_http_version=1.1
[ "$rc" -eq 2 ] || fail "1.1 with grpc: exit $rc: $out"
assert_contains "$out" "gRPC needs HTTP/2"
echo "fetch_h2: ok"
