#!/usr/bin/env bash
# What the proxy passes upstream and what it says when the upstream fails:
# --remote_header and user:password reach nginx and are never printed; an
# upstream refusal is 502, an unreachable upstream 502, a silent one 504, each
# with a text body naming the upstream URL without credentials; the instance
# name is a path prefix. And the flags: loopback only unless --listen_any,
# required flags, --help.
. "$TF_SOURCE_ROOT/tests/lib/harness.sh"
. "$TF_SOURCE_ROOT/tests/proxy/lib.sh"
need python3
# nginx answers 403 unless the request carries our token.
nginx_start 'if ($http_x_tf_token != "s3cret-token") { return 403; }'
hostport=${NGINX_URL#http://}
h=$(blob "$tf_tmp/b" 70000)
miss=$(echo "absent" | sha256sum | cut -d' ' -f1)

# With the header and credentials: uploads and downloads work; nginx sees the user.
proxy_start p1.log --remote_cache="http://alice:pa55word@$hostport" --remote_header=X-Tf-Token=s3cret-token \
  --output_dir="$tf_tmp/out1"
req PUT "$PROXY_URL/cas/$h" -T "$tf_tmp/b"
[ "$code" = 201 ] || fail "PUT with the header: HTTP $code: $body"
req GET "$PROXY_URL/cas/$h"
[ "$code" = 200 ] && cmp -s "$tf_tmp/b" "$tf_tmp/body" || fail "GET with the header: HTTP $code"
[ "$(nginx_count "GET /cas/$h 200 70000 HTTP/1.1 conn=[0-9]* user=alice")" -eq 1 ] || fail "Basic auth user not seen by nginx"
proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "p1 exit $proxy_rc"

# Without the header: nginx says 403; the proxy answers 502 naming the URL.
proxy_start p2.log --remote_cache="http://alice:pa55word@$hostport/" --output_dir="$tf_tmp/out2"
for m in GET HEAD; do
  req $m "$PROXY_URL/cas/$h"
  [ "$code" = 502 ] || fail "$m refused upstream: HTTP $code, want 502"
done
req GET "$PROXY_URL/cas/$h"
assert_contains "$body" "upstream http://$hostport/cas/$h answered HTTP 403" "502 body"
req GET "$PROXY_URL/ac/$miss"
[ "$code" = 502 ] || fail "AC GET refused upstream: HTTP $code"
req PUT "$PROXY_URL/cas/$h" -T "$tf_tmp/b"
[ "$code" = 502 ] || fail "PUT refused upstream: HTTP $code, want 502"
assert_contains "$body" "answered HTTP 403" "PUT 502 body"
proxy_stop
case "$(cat "$tf_tmp/p1.log" "$tf_tmp/p2.log" "$tf_tmp/body")" in
  *pa55word*|*s3cret-token*) fail "a credential was printed or sent to the client" ;;
esac
grep -q "forwarding to http://$hostport\$" "$tf_tmp/p2.log" || fail "the start line should name the upstream without credentials"

# The URL's path prefix is used upstream; the instance name is not (as Bazel's HTTP cache client).
mkdir -p "$NGINX_CACHE/team/cas"
cp "$tf_tmp/b" "$NGINX_CACHE/team/cas/$h"
chmod -R a+rX "$NGINX_CACHE/team"
proxy_start p3.log --remote_cache="$NGINX_URL/team" --remote_instance_name=other \
  --remote_header=X-Tf-Token=s3cret-token --output_dir="$tf_tmp/out3"
req GET "$PROXY_URL/cas/$h"
[ "$code" = 200 ] || fail "prefix GET: HTTP $code"
[ "$(nginx_count "GET /team/cas/$h 200")" -eq 1 ] || fail "the URL's path prefix was not used"
[ "$(nginx_count "/other/")" -eq 0 ] || fail "the instance name went into an HTTP URL"
proxy_stop

# Nobody listening upstream: 502 at once, naming the URL, no credentials.
dead=$(free_port)
proxy_start p4.log --remote_cache="http://bob:hunter2@127.0.0.1:$dead" --output_dir="$tf_tmp/out4"
for path in "cas/$h" "ac/$miss"; do
  req GET "$PROXY_URL/$path"
  [ "$code" = 502 ] || fail "dead upstream $path: HTTP $code"
  assert_contains "$body" "upstream http://127.0.0.1:$dead/$path" "dead upstream body"
done
req PUT "$PROXY_URL/cas/$h" -T "$tf_tmp/b"
[ "$code" = 502 ] || fail "dead upstream PUT: HTTP $code"
case "$body" in *hunter2*|*bob*) fail "credentials in the error body: $body" ;; esac
proxy_stop
case "$(cat "$tf_tmp/p4.log")" in *hunter2*) fail "a password was printed" ;; esac

# An upstream that accepts and never answers: 504 after --remote_timeout.
silent=$(free_port)
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' "$silent" >"$tf_tmp/silent.log" 2>&1 &
silent_pid=$!
tf_track "$silent_pid"
wait_port "$silent"
proxy_start p5.log --remote_cache="http://127.0.0.1:$silent" --remote_timeout=1 --output_dir="$tf_tmp/out5"
start=$(date +%s%N)
req GET "$PROXY_URL/cas/$h"
took=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$code" = 504 ] || fail "silent upstream: HTTP $code, want 504"
assert_contains "$body" "no answer within --remote_timeout=1s" "504 body"
[ "$took" -lt 5000 ] || fail "the timeout took $took ms"
proxy_stop
kill "$silent_pid"

# Flags.
run_tf proxy --listen=0.0.0.0:0 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o"
[ "$rc" -eq 2 ] || fail "non-loopback listen: exit $rc"
assert_contains "$out" "not a loopback address"
assert_contains "$out" "--listen_any"
proxy_start p6.log --listen=0.0.0.0:0 --listen_any --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o6"
proxy_stop
[ "$proxy_rc" -eq 0 ] || fail "--listen_any: exit $proxy_rc"
run_tf proxy --listen=127.0.0.1:0 --output_dir="$tf_tmp/o"
[ "$rc" -eq 2 ] || fail "no --remote_cache: exit $rc"
run_tf proxy --listen=127.0.0.1:0 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o" --exit_after_build
[ "$rc" -eq 2 ] || fail "--exit_after_build without --bep_follow: exit $rc"
run_tf proxy --listen=127.0.0.1:0 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o" --remote_download_outputs=some
[ "$rc" -eq 2 ] || fail "bad --remote_download_outputs: exit $rc"
run_tf proxy --listen=127.0.0.1:99999 --remote_cache="$NGINX_URL" --output_dir="$tf_tmp/o"
[ "$rc" -eq 2 ] || fail "bad port: exit $rc"
busy=$(sed -n 's|.*:\([0-9]*\)$|\1|p' <<<"$NGINX_URL")
mkdir -p "$tf_tmp/dc"; run_tf proxy --listen=127.0.0.1:$busy --remote_cache="$tf_tmp/dc" --output_dir="$tf_tmp/o"
[ "$rc" -eq 2 ] || fail "port in use: exit $rc"
assert_contains "$out" "cannot listen on 127.0.0.1:$busy"
run_tf proxy --help
[ "$rc" -eq 0 ] || fail "--help: exit $rc"
for word in listen_any --bep_follow exit_after_build remote_validate_outputs "SIGINT or SIGTERM" \
  "exits 8" --remote_header --tls_client_key; do
  assert_contains "$out" "$word" "--help"
done
echo "proxy_upstream: ok"
